package sqi.flinkpeer;

/**
 * One contract record (CONTRACTS.md, "The Kafka record"), decoded and checked.
 *
 * <p>Public fields and a no-argument constructor make it a Flink POJO, which
 * Flink serializes field by field across a shuffle; Kryo, its fallback for
 * other types, is switched off in {@link FlinkPeer} so that nothing slips
 * through it unnoticed. {@code props} is two string arrays (keys in order,
 * then their values) for the same reason: a {@code Map} field would go to
 * Kryo.
 */
public class Event {
    public int v;
    public String eventId;
    public String publisher;
    public String type;
    /** The catalog slug; null for a pageview. */
    public String channel;
    public String url;
    public String referrer;
    public String visitor;
    /** Event time, epoch ms. */
    public long ts;
    /** Receive time, epoch ms. */
    public long receivedAt;
    public String device;
    public String ipPrefix;
    /** The props' keys, sorted (the processor keeps them in a BTreeMap). */
    public String[] propKeys = RecordParser.NONE;
    public String[] propValues = RecordParser.NONE;

    /** Why the record is not a contract record, or null. */
    public String error;
    /**
     * Where the record came from and its bytes, kept only until it is known
     * whether it is a dead letter (then it travels to the dead-letter topic
     * as it came); cleared before the first shuffle.
     */
    public DeadLetter source;

    public Event() {}
}
