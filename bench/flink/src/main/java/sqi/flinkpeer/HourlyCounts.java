package sqi.flinkpeer;

import java.time.Duration;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The hourly counts: event-time tumbling windows of one hour, keyed as the
 * processor keys {@code aggregates} (publisher, channel, event type, device)
 * and {@code url_counts} (publisher, URL, event type, channel).
 *
 * <p>Each event is cut down to one key string before the shuffle, its four
 * fields joined by NUL, so only that crosses it. One string rather than a
 * tuple of four: a profile put a tenth of the job's CPU in comparing tuple
 * keys (window state and timers look the key up per event) and more in
 * deserializing four strings instead of one. NUL cannot occur in a
 * publisher, type, channel or device (the decoder checks them), and a URL,
 * which may hold anything, is the last field. A pageview's missing channel
 * is "" in the key and null again in the row. The allowed lateness is
 * in the watermark (bounded out-of-orderness of 2 h, {@link FlinkPeer}), not
 * in {@code allowedLateness}, so each window fires once, as the processor
 * writes each hour's counts of a range once.
 */
final class HourlyCounts {
    private HourlyCounts() {}

    private static final char SEP = '\0';
    private static final OutputTag<String> LATE = new OutputTag<>("late-at-windows", Types.STRING);

    static DataStream<AggregateRow> aggregates(DataStream<Event> events) {
        SingleOutputStreamOperator<AggregateRow> rows = events
                .map(e -> e.publisher + SEP + (e.channel == null ? "" : e.channel) + SEP + e.type + SEP + e.device)
                .returns(Types.STRING)
                .name("aggregate key")
                .keyBy(k -> k, Types.STRING)
                .window(TumblingEventTimeWindows.of(Duration.ofHours(1)))
                .sideOutputLateData(LATE)
                .aggregate(new Count(), new AggregateRows())
                .name("aggregates");
        countLate(rows, "aggregates");
        return rows;
    }

    static DataStream<UrlCountRow> urlCounts(DataStream<Event> events) {
        SingleOutputStreamOperator<UrlCountRow> rows = events
                .map(e -> e.publisher + SEP + e.type + SEP + (e.channel == null ? "" : e.channel) + SEP + e.url)
                .returns(Types.STRING)
                .name("url key")
                .keyBy(k -> k, Types.STRING)
                .window(TumblingEventTimeWindows.of(Duration.ofHours(1)))
                .sideOutputLateData(LATE)
                .aggregate(new Count(), new UrlCountRows())
                .name("url_counts");
        countLate(rows, "url_counts");
        return rows;
    }

    /** What a window would drop as late, counted (nothing, see {@link Route}). */
    private static void countLate(SingleOutputStreamOperator<?> rows, String table) {
        rows.getSideOutput(LATE)
                .process(new LateCounter("late_at_" + table))
                .returns(Types.VOID)
                .name("late at " + table)
                .sinkTo(new DiscardingSink<>());
    }

    /** Counts the events of one key in one window, one long of state. */
    static final class Count implements AggregateFunction<String, Long, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(String key, Long count) {
            return count + 1;
        }

        @Override
        public Long getResult(Long count) {
            return count;
        }

        @Override
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    static final class AggregateRows
            extends ProcessWindowFunction<Long, AggregateRow, String, TimeWindow> {
        private static final long serialVersionUID = 1L;

        @Override
        public void process(String key, Context context, Iterable<Long> counts, Collector<AggregateRow> out) {
            String[] f = split(key);
            AggregateRow row = new AggregateRow();
            row.windowStart = context.window().getStart();
            row.publisher = f[0];
            row.channel = f[1].isEmpty() ? null : f[1];
            row.eventType = f[2];
            row.device = f[3];
            row.events = counts.iterator().next();
            out.collect(row);
        }
    }

    static final class UrlCountRows
            extends ProcessWindowFunction<Long, UrlCountRow, String, TimeWindow> {
        private static final long serialVersionUID = 1L;

        @Override
        public void process(String key, Context context, Iterable<Long> counts, Collector<UrlCountRow> out) {
            String[] f = split(key);
            UrlCountRow row = new UrlCountRow();
            row.windowStart = context.window().getStart();
            row.publisher = f[0];
            row.eventType = f[1];
            row.channel = f[2].isEmpty() ? null : f[2];
            row.url = f[3];
            row.events = counts.iterator().next();
            out.collect(row);
        }
    }

    /** A key's four fields; the last keeps any NUL it holds. */
    static String[] split(String key) {
        String[] fields = new String[4];
        int from = 0;
        for (int i = 0; i < 3; i++) {
            int at = key.indexOf(SEP, from);
            fields[i] = key.substring(from, at);
            from = at + 1;
        }
        fields[3] = key.substring(from);
        return fields;
    }

    static final class LateCounter extends ProcessFunction<String, Void> {
        private static final long serialVersionUID = 1L;
        private final String name;
        private final LongCounter late = new LongCounter();

        LateCounter(String name) {
            this.name = name;
        }

        @Override
        public void open(OpenContext context) {
            getRuntimeContext().addAccumulator(name, late);
        }

        @Override
        public void processElement(String key, Context ctx, Collector<Void> out) {
            late.add(1);
        }
    }
}
