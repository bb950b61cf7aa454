package sqi.flinkpeer;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import java.util.TreeMap;

/**
 * Decodes a Kafka value into an {@link Event} and checks it against the same
 * rules as the processor (schemas/src/record.rs {@code RecordView::check},
 * processor/src/partition.rs {@code check_times}): every field read, unknown
 * fields skipped, a repeated field refused (as serde's derive does), v = 1, a
 * UUID id, a valid publisher, a type and device from their sets, a channel
 * exactly when the type needs one and then a canonical catalog slug, times
 * not negative, not before 2000, an event time at most 5 min after its
 * receive time and a receive time at most 5 min after the Kafka timestamp.
 *
 * <p>It uses Jackson's streaming parser, not data binding: the fastest way
 * Java has to read every field of this JSON, so Flink is not slowed by the
 * decoder we chose for it.
 */
final class RecordParser {
    static final String[] NONE = new String[0];

    /** 2000-01-01T00:00:00Z, as {@code EARLIEST_EVENT_TIME_MS}. */
    static final long EARLIEST_MS = 946_684_800_000L;
    /** The processor's {@code --future-bound} default. */
    static final long FUTURE_BOUND_MS = 5 * 60 * 1000L;

    private static final JsonFactory JSON = new JsonFactory();
    private static final Set<String> SLUGS = loadSlugs();

    private RecordParser() {}

    /** The record with value {@code value} and Kafka timestamp {@code kafkaMs} (negative: none). */
    static Event parse(byte[] value, long kafkaMs) {
        Event event = new Event();
        if (value == null) {
            event.error = "record has no value";
            return event;
        }
        try {
            event.error = read(value, event);
            if (event.error == null) {
                event.error = check(event, kafkaMs);
            }
        } catch (IOException | RuntimeException e) {
            event.error = "not a v1 event record: " + e.getMessage();
        }
        return event;
    }

    // Field bits, to find missing and repeated fields.
    private static final int V = 1, ID = 2, PUBLISHER = 4, TYPE = 8, CHANNEL = 16, URL = 32,
            REFERRER = 64, VISITOR = 128, TS = 256, RECEIVED = 512, DEVICE = 1024, IP = 2048,
            PROPS = 4096;
    private static final int REQUIRED = V | ID | PUBLISHER | TYPE | URL | TS | RECEIVED | DEVICE | PROPS;

    /** Reads the JSON object into {@code e}; the reason it is not one, or null. */
    private static String read(byte[] value, Event e) throws IOException {
        int seen = 0;
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return "not a v1 event record: not a JSON object";
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken t = p.nextToken();
                int bit = bit(name);
                if ((seen & bit) != 0) {
                    return "not a v1 event record: duplicate field `" + name + "`";
                }
                seen |= bit;
                switch (name) {
                    case "v" -> {
                        long v = integer(p, t, name);
                        if (v < 0 || v > 255) {
                            return "not a v1 event record: v out of range";
                        }
                        e.v = (int) v;
                    }
                    case "event_id" -> e.eventId = string(p, t, name);
                    case "publisher" -> e.publisher = string(p, t, name);
                    case "type" -> e.type = string(p, t, name);
                    case "channel" -> e.channel = optional(p, t, name);
                    case "url" -> e.url = string(p, t, name);
                    case "referrer" -> e.referrer = optional(p, t, name);
                    case "visitor" -> e.visitor = optional(p, t, name);
                    case "ts" -> e.ts = integer(p, t, name);
                    case "received_at" -> e.receivedAt = integer(p, t, name);
                    case "device" -> e.device = string(p, t, name);
                    case "ip_prefix" -> e.ipPrefix = optional(p, t, name);
                    case "props" -> readProps(p, t, e);
                    default -> p.skipChildren();
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                return "not a v1 event record: trailing characters";
            }
        }
        if ((seen & REQUIRED) != REQUIRED) {
            return "not a v1 event record: missing field";
        }
        return null;
    }

    private static int bit(String name) {
        return switch (name) {
            case "v" -> V;
            case "event_id" -> ID;
            case "publisher" -> PUBLISHER;
            case "type" -> TYPE;
            case "channel" -> CHANNEL;
            case "url" -> URL;
            case "referrer" -> REFERRER;
            case "visitor" -> VISITOR;
            case "ts" -> TS;
            case "received_at" -> RECEIVED;
            case "device" -> DEVICE;
            case "ip_prefix" -> IP;
            case "props" -> PROPS;
            default -> 0;
        };
    }

    private static long integer(JsonParser p, JsonToken t, String name) throws IOException {
        if (t != JsonToken.VALUE_NUMBER_INT) {
            throw new IOException("`" + name + "` is not an integer");
        }
        return p.getLongValue();
    }

    private static String string(JsonParser p, JsonToken t, String name) throws IOException {
        if (t != JsonToken.VALUE_STRING) {
            throw new IOException("`" + name + "` is not a string");
        }
        return p.getText();
    }

    private static String optional(JsonParser p, JsonToken t, String name) throws IOException {
        return t == JsonToken.VALUE_NULL ? null : string(p, t, name);
    }

    /** A map of string to string; a repeated key keeps its last value, keys end up sorted. */
    private static void readProps(JsonParser p, JsonToken t, Event e) throws IOException {
        if (t != JsonToken.START_OBJECT) {
            throw new IOException("`props` is not an object");
        }
        TreeMap<String, String> props = null;
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.currentName();
            String value = string(p, p.nextToken(), "props." + key);
            if (props == null) {
                props = new TreeMap<>();
            }
            props.put(key, value);
        }
        if (props != null) {
            e.propKeys = props.keySet().toArray(NONE);
            e.propValues = props.values().toArray(NONE);
        }
    }

    /** The contract's rules on a fully read record; the reason it breaks one, or null. */
    private static String check(Event e, long kafkaMs) {
        if (e.v != 1) {
            return "record violates the contract: unsupported schema version";
        }
        if (!isUuid(e.eventId)) {
            return "record violates the contract: event_id is not a UUID";
        }
        if (!isPublisher(e.publisher)) {
            return "record violates the contract: invalid publisher";
        }
        boolean needsChannel;
        switch (e.type) {
            case "pageview" -> needsChannel = false;
            case "share", "clickback" -> needsChannel = true;
            default -> {
                return "not a v1 event record: unknown variant `" + e.type + "`";
            }
        }
        switch (e.device) {
            case "desktop", "mobile", "tablet", "bot", "other" -> {}
            default -> {
                return "not a v1 event record: unknown variant `" + e.device + "`";
            }
        }
        if (needsChannel && e.channel == null) {
            return "record violates the contract: missing channel";
        }
        if (!needsChannel && e.channel != null) {
            return "record violates the contract: pageview with a channel";
        }
        if (needsChannel && !SLUGS.contains(e.channel)) {
            return "record violates the contract: channel is not a canonical slug";
        }
        if (e.ts < 0 || e.receivedAt < 0) {
            return "record violates the contract: negative time";
        }
        // check_times: no honest writer produces these.
        if (e.ts < EARLIEST_MS || e.receivedAt < EARLIEST_MS) {
            return "time: before 2000";
        }
        if (e.ts > e.receivedAt + FUTURE_BOUND_MS) {
            return "time: event time more than " + FUTURE_BOUND_MS + " ms after its receive time";
        }
        if (kafkaMs >= EARLIEST_MS && e.receivedAt > kafkaMs + FUTURE_BOUND_MS) {
            return "time: receive time more than " + FUTURE_BOUND_MS + " ms after the Kafka timestamp";
        }
        return null;
    }

    static boolean isPublisher(String s) {
        int n = s.length();
        if (n < 3 || n > 64) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                    || c == '_' || c == '.' || c == '-';
            if (!ok) {
                return false;
            }
        }
        return true;
    }

    /**
     * The spellings the uuid crate's {@code Uuid::try_parse} accepts: hyphenated
     * (36), simple (32 hex digits), braced (38) and URN (45), hex in either case.
     */
    static boolean isUuid(String s) {
        return switch (s.length()) {
            case 36 -> hyphenated(s, 0);
            case 32 -> hex(s, 0, 32);
            case 38 -> s.charAt(0) == '{' && s.charAt(37) == '}' && hyphenated(s, 1);
            case 45 -> s.startsWith("urn:uuid:") && hyphenated(s, 9);
            default -> false;
        };
    }

    private static boolean hyphenated(String s, int at) {
        return hex(s, at, 8) && s.charAt(at + 8) == '-' && hex(s, at + 9, 4) && s.charAt(at + 13) == '-'
                && hex(s, at + 14, 4) && s.charAt(at + 18) == '-' && hex(s, at + 19, 4)
                && s.charAt(at + 23) == '-' && hex(s, at + 24, 12);
    }

    private static boolean hex(String s, int from, int count) {
        for (int i = from; i < from + count; i++) {
            if (Character.digit(s.charAt(i), 16) < 0) {
                return false;
            }
        }
        return true;
    }

    /** The slugs of schemas/data/channels.csv (copied into the jar by the build). */
    private static Set<String> loadSlugs() {
        Set<String> slugs = new HashSet<>();
        try (InputStream in = RecordParser.class.getResourceAsStream("/channels.csv")) {
            if (in == null) {
                throw new IllegalStateException("channels.csv is not on the classpath");
            }
            BufferedReader lines = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
            lines.readLine(); // header: slug,name,aliases
            String line;
            while ((line = lines.readLine()) != null) {
                if (!line.isBlank()) {
                    slugs.add(line.substring(0, line.indexOf(',')));
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException("cannot read channels.csv", e);
        }
        return slugs;
    }

    /** For tests by hand: prints each line's decision. */
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            Event e = parse(line.getBytes(StandardCharsets.UTF_8), -1);
            System.out.println(e.error == null ? "ok " + e.eventId + " " + Arrays.toString(e.propKeys) : e.error);
        }
    }
}
