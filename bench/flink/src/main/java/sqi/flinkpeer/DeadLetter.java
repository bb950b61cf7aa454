package sqi.flinkpeer;

/**
 * A record refused by the job, as the processor's dead-letter topic carries
 * it: the original key and value, where it was read, and why (headers
 * {@code sqi.dlq.*}, as in processor/src/dlq.rs).
 */
public class DeadLetter {
    public String topic;
    public int partition;
    public long offset;
    /** May be null: Kafka keys and values are optional. */
    public byte[] key;
    public byte[] value;
    public String error;

    public DeadLetter() {}
}
