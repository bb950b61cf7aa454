package sqi.flinkpeer;

/** One row of {@code url_counts} (schemas/src/lake.rs): an hour's count for one URL key. */
public class UrlCountRow {
    /** Hour start, epoch ms. */
    public long windowStart;
    public String publisher;
    public String url;
    public String eventType;
    /** Null for pageviews. */
    public String channel;
    public long events;

    public UrlCountRow() {}
}
