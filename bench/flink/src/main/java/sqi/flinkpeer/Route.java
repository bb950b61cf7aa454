package sqi.flinkpeer;

import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The first step after the source, chained to it (with object reuse on, a
 * record passes without a copy): counts every record, sends malformed and
 * late ones to the dead-letter side output, and passes the rest on without
 * their source bytes, which would otherwise cross the next shuffle.
 *
 * <p>Late is judged here, before dedup and before the events sink, because
 * the processor neither counts nor stores a late event: it is a dead letter.
 * An event not late here is not late at the windows either (a watermark only
 * reaches them after the records before it), so the windows drop nothing
 * this step let through; they count what they would drop all the same.
 */
final class Route extends ProcessFunction<Event, Event> {
    private static final long serialVersionUID = 1L;

    static final OutputTag<DeadLetter> DEAD = new OutputTag<>("dead-letters") {
        private static final long serialVersionUID = 1L;
    };

    private final LongCounter records = new LongCounter();
    private final LongCounter malformed = new LongCounter();
    private final LongCounter late = new LongCounter();

    @Override
    public void open(OpenContext context) {
        Metrics.jobStarted();
        getRuntimeContext().addAccumulator("records", records);
        getRuntimeContext().addAccumulator("malformed", malformed);
        getRuntimeContext().addAccumulator("late", late);
    }

    @Override
    public void processElement(Event e, Context ctx, Collector<Event> out) {
        records.add(1);
        DeadLetter source = e.source;
        e.source = null;
        if (e.error != null) {
            malformed.add(1);
            source.error = e.error;
            ctx.output(DEAD, source);
        } else if (e.ts <= ctx.timerService().currentWatermark()) {
            late.add(1);
            source.error = "late: event time " + e.ts + " is behind the watermark "
                    + ctx.timerService().currentWatermark();
            ctx.output(DEAD, source);
        } else {
            out.collect(e);
        }
    }
}
