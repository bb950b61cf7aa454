package sqi.flinkpeer;

import java.util.Map;
import org.apache.flink.formats.parquet.ParquetWriterFactory;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.conf.ParquetConfiguration;
import org.apache.parquet.hadoop.ParquetWriter;
import org.apache.parquet.hadoop.api.WriteSupport;
import org.apache.parquet.hadoop.metadata.CompressionCodecName;
import org.apache.parquet.io.OutputFile;
import org.apache.parquet.io.api.Binary;
import org.apache.parquet.io.api.RecordConsumer;
import org.apache.parquet.schema.MessageType;
import org.apache.parquet.schema.MessageTypeParser;

/**
 * The three hourly tables the processor writes, as Parquet writers for
 * Flink's {@code FileSink}: the same columns, types and nullability as
 * schemas/src/lake.rs, Snappy, and the processor's hourly profile
 * (schemas/src/lake/profile.rs: no dictionary for {@code event_id}, {@code ts},
 * {@code received_at} and {@code url_counts.url}).
 *
 * <p>Rows go straight from the POJO to Parquet's record consumer through a
 * hand-written {@link WriteSupport}: no Avro or Row objects in between, the
 * cheapest path flink-parquet offers.
 */
final class ParquetTables {
    private ParquetTables() {}

    static final MessageType EVENTS = MessageTypeParser.parseMessageType("""
            message events {
              required int32 v;
              required binary event_id (STRING);
              required binary publisher (STRING);
              required binary type (STRING);
              optional binary channel (STRING);
              required binary url (STRING);
              optional binary referrer (STRING);
              optional binary visitor (STRING);
              required int64 ts (TIMESTAMP(MILLIS,true));
              required int64 received_at (TIMESTAMP(MILLIS,true));
              required binary device (STRING);
              optional binary ip_prefix (STRING);
              required group props (MAP) {
                repeated group key_value {
                  required binary key (STRING);
                  optional binary value (STRING);
                }
              }
            }
            """);

    static final MessageType AGGREGATES = MessageTypeParser.parseMessageType("""
            message aggregates {
              required int64 window_start (TIMESTAMP(MILLIS,true));
              required binary publisher (STRING);
              optional binary channel (STRING);
              required binary event_type (STRING);
              required binary device (STRING);
              required int64 events;
            }
            """);

    static final MessageType URL_COUNTS = MessageTypeParser.parseMessageType("""
            message url_counts {
              required int64 window_start (TIMESTAMP(MILLIS,true));
              required binary publisher (STRING);
              required binary url (STRING);
              required binary event_type (STRING);
              optional binary channel (STRING);
              required int64 events;
            }
            """);

    static ParquetWriterFactory<Event> events() {
        return new ParquetWriterFactory<>(out -> new Builder<>(out, new EventsSupport())
                .withCompressionCodec(CompressionCodecName.SNAPPY)
                .withDictionaryEncoding("event_id", false)
                .withDictionaryEncoding("ts", false)
                .withDictionaryEncoding("received_at", false)
                .build());
    }

    static ParquetWriterFactory<AggregateRow> aggregates() {
        return new ParquetWriterFactory<>(out -> new Builder<>(out, new AggregatesSupport())
                .withCompressionCodec(CompressionCodecName.SNAPPY)
                .build());
    }

    static ParquetWriterFactory<UrlCountRow> urlCounts() {
        return new ParquetWriterFactory<>(out -> new Builder<>(out, new UrlCountsSupport())
                .withCompressionCodec(CompressionCodecName.SNAPPY)
                .withDictionaryEncoding("url", false)
                .build());
    }

    /** A writer over Flink's output stream with a given write support. */
    private static final class Builder<T> extends ParquetWriter.Builder<T, Builder<T>> {
        private final WriteSupport<T> support;

        Builder(OutputFile out, WriteSupport<T> support) {
            super(out);
            this.support = support;
        }

        @Override
        protected Builder<T> self() {
            return this;
        }

        @Override
        protected WriteSupport<T> getWriteSupport(ParquetConfiguration conf) {
            return support;
        }

        // Deprecated but still abstract: Parquet calls the variant above.
        @Override
        @SuppressWarnings("deprecation")
        protected WriteSupport<T> getWriteSupport(Configuration conf) {
            return support;
        }
    }

    /** Field-by-field writing for one schema. */
    private abstract static class Support<T> extends WriteSupport<T> {
        private final MessageType schema;
        RecordConsumer out;

        Support(MessageType schema) {
            this.schema = schema;
        }

        @Override
        public WriteContext init(ParquetConfiguration conf) {
            return new WriteContext(schema, Map.of());
        }

        // Deprecated but still abstract: Parquet calls the variant above.
        @Override
        @SuppressWarnings("deprecation")
        public WriteContext init(Configuration conf) {
            return new WriteContext(schema, Map.of());
        }

        @Override
        public void prepareForWrite(RecordConsumer consumer) {
            out = consumer;
        }

        final void string(int index, String name, String value) {
            if (value != null) {
                out.startField(name, index);
                out.addBinary(Binary.fromString(value));
                out.endField(name, index);
            }
        }

        final void int64(int index, String name, long value) {
            out.startField(name, index);
            out.addLong(value);
            out.endField(name, index);
        }
    }

    private static final class EventsSupport extends Support<Event> {
        EventsSupport() {
            super(EVENTS);
        }

        @Override
        public void write(Event e) {
            out.startMessage();
            out.startField("v", 0);
            out.addInteger(e.v);
            out.endField("v", 0);
            string(1, "event_id", e.eventId);
            string(2, "publisher", e.publisher);
            string(3, "type", e.type);
            string(4, "channel", e.channel);
            string(5, "url", e.url);
            string(6, "referrer", e.referrer);
            string(7, "visitor", e.visitor);
            int64(8, "ts", e.ts);
            int64(9, "received_at", e.receivedAt);
            string(10, "device", e.device);
            string(11, "ip_prefix", e.ipPrefix);
            out.startField("props", 12);
            out.startGroup();
            if (e.propKeys.length > 0) {
                out.startField("key_value", 0);
                for (int i = 0; i < e.propKeys.length; i++) {
                    out.startGroup();
                    string(0, "key", e.propKeys[i]);
                    string(1, "value", e.propValues[i]);
                    out.endGroup();
                }
                out.endField("key_value", 0);
            }
            out.endGroup();
            out.endField("props", 12);
            out.endMessage();
        }
    }

    private static final class AggregatesSupport extends Support<AggregateRow> {
        AggregatesSupport() {
            super(AGGREGATES);
        }

        @Override
        public void write(AggregateRow r) {
            out.startMessage();
            int64(0, "window_start", r.windowStart);
            string(1, "publisher", r.publisher);
            string(2, "channel", r.channel);
            string(3, "event_type", r.eventType);
            string(4, "device", r.device);
            int64(5, "events", r.events);
            out.endMessage();
        }
    }

    private static final class UrlCountsSupport extends Support<UrlCountRow> {
        UrlCountsSupport() {
            super(URL_COUNTS);
        }

        @Override
        public void write(UrlCountRow r) {
            out.startMessage();
            int64(0, "window_start", r.windowStart);
            string(1, "publisher", r.publisher);
            string(2, "url", r.url);
            string(3, "event_type", r.eventType);
            string(4, "channel", r.channel);
            int64(5, "events", r.events);
            out.endMessage();
        }
    }
}
