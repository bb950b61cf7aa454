package sqi.flinkpeer;

import java.io.Serializable;
import java.time.LocalDate;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.streaming.api.functions.sink.filesystem.BucketAssigner;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.SimpleVersionedStringSerializer;

/**
 * Puts each row under the lake's Hive-style hour partition,
 * {@code dt=YYYY-MM-DD/hour=HH}, of its event hour (UTC).
 */
final class HourBucket<T> implements BucketAssigner<T, String> {
    private static final long serialVersionUID = 1L;
    private static final long HOUR_MS = 3_600_000L;

    /** A row's time, epoch ms. */
    interface Time<T> extends Serializable {
        long millis(T row);
    }

    private final Time<T> time;
    // One partition's name is asked for again and again: keep the last one.
    private transient long lastHour = Long.MIN_VALUE;
    private transient String lastBucket;

    HourBucket(Time<T> time) {
        this.time = time;
    }

    @Override
    public String getBucketId(T row, Context context) {
        long hour = Math.floorDiv(time.millis(row), HOUR_MS);
        if (hour != lastHour || lastBucket == null) {
            LocalDate day = LocalDate.ofEpochDay(Math.floorDiv(hour, 24));
            lastBucket = String.format("dt=%s/hour=%02d", day, Math.floorMod(hour, 24));
            lastHour = hour;
        }
        return lastBucket;
    }

    @Override
    public SimpleVersionedSerializer<String> getSerializer() {
        return SimpleVersionedStringSerializer.INSTANCE;
    }
}
