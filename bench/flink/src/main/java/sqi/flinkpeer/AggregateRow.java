package sqi.flinkpeer;

/** One row of {@code aggregates} (schemas/src/lake.rs): an hour's count for one key. */
public class AggregateRow {
    /** Hour start, epoch ms. */
    public long windowStart;
    public String publisher;
    /** Null for pageviews. */
    public String channel;
    public String eventType;
    public String device;
    public long events;

    public AggregateRow() {}
}
