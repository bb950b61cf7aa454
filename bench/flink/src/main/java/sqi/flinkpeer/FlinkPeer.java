package sqi.flinkpeer;

import java.io.File;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.Path;
import org.apache.flink.formats.parquet.ParquetWriterFactory;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.filesystem.OutputFileConfig;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.OnCheckpointRollingPolicy;

/**
 * The Flink peer of {@code sqi process} (bench/flink/README.md): reads one
 * topic of contract records from Kafka, bounded to what it held at the start,
 * and writes the processor's three hourly tables as Parquet, exactly once
 * through checkpoints. At the end it prints one JSON line of what it counted
 * and what it cost.
 *
 * <p>usage: FlinkPeer --brokers HOST:PORT --topic TOPIC --out DIR
 * [--parallelism N] [--checkpoint-ms MS] [--dlq-topic TOPIC]
 */
public final class FlinkPeer {
    private FlinkPeer() {}

    /** The processor's allowed lateness (--allowed-lateness, 2 h). */
    static final Duration LATENESS = Duration.ofHours(2);

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = Args.parse(argv);
        String brokers = Args.required(args, "brokers");
        String topic = Args.required(args, "topic");
        File out = new File(Args.required(args, "out")).getAbsoluteFile();
        int parallelism = Integer.parseInt(args.getOrDefault("parallelism", "1"));
        long checkpointMs = Long.parseLong(args.getOrDefault("checkpoint-ms", "10000"));
        String dlqTopic = args.getOrDefault("dlq-topic", topic + "-dlq");

        Configuration conf = new Configuration();
        // Heap state (the default backend, the fastest for state that fits),
        // snapshotted to local files: the JobManager's memory refuses state
        // over 5 MB, and the dedup table is larger than that.
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY,
                new File(out, "_checkpoints").toURI().toString());
        // Every type must have a Flink serializer: a Kryo fallback would be slow
        // and would hide here. No copies between chained operators: none of
        // the functions keeps a record it has passed on.
        conf.set(PipelineOptions.GENERIC_TYPES, false);
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.enableCheckpointing(checkpointMs, CheckpointingMode.EXACTLY_ONCE);

        KafkaSource<Event> source = KafkaSource.<Event>builder()
                .setBootstrapServers(brokers)
                .setTopics(topic)
                .setGroupId("flink-peer-" + UUID.randomUUID())
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setBounded(OffsetsInitializer.latest())
                .setDeserializer(new KafkaEvents())
                .build();
        // Watermarks per partition, as the processor keeps one per partition;
        // a refused record must not move it (its time does not count).
        WatermarkStrategy<Event> watermarks = WatermarkStrategy.<Event>forBoundedOutOfOrderness(LATENESS)
                .withTimestampAssigner((e, kafkaMs) -> e.error == null ? e.ts : Long.MIN_VALUE);

        SingleOutputStreamOperator<Event> valid = env.fromSource(source, watermarks, "kafka")
                .process(new Route())
                .name("decode");
        valid.getSideOutput(Route.DEAD)
                .sinkTo(KafkaSink.<DeadLetter>builder()
                        .setBootstrapServers(brokers)
                        .setRecordSerializer(new DeadLetterRecords(dlqTopic))
                        // The processor's dead-letter topic is at-least-once too.
                        .setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE)
                        .build())
                .name("dead letters");

        DataStream<Event> events = valid
                .keyBy(e -> e.eventId, Types.STRING)
                .process(new Dedup())
                .name("dedup");
        events.sinkTo(hourly(out, "events", ParquetTables.events(), e -> e.ts)).name("events");
        HourlyCounts.aggregates(events)
                .sinkTo(hourly(out, "aggregates", ParquetTables.aggregates(), r -> r.windowStart))
                .name("aggregates files");
        HourlyCounts.urlCounts(events)
                .sinkTo(hourly(out, "url_counts", ParquetTables.urlCounts(), r -> r.windowStart))
                .name("url_counts files");

        JobExecutionResult result = env.execute("sqi flink peer");
        double jobCpu = Metrics.jobCpuSeconds();
        double jobWall = Metrics.jobWallSeconds();
        System.out.println(String.format(Locale.ROOT,
                "{\"records\":%d,\"counted\":%d,\"duplicates\":%d,\"malformed\":%d,\"late\":%d,"
                        + "\"late_at_windows\":%d,\"job_cpu_s\":%.2f,\"job_wall_s\":%.3f,"
                        + "\"process_cpu_s\":%.2f,\"peak_rss_bytes\":%d,\"parallelism\":%d,"
                        + "\"checkpoint_ms\":%d}",
                count(result, "records"), count(result, "counted"), count(result, "duplicates"),
                count(result, "malformed"), count(result, "late"),
                count(result, "late_at_aggregates") + count(result, "late_at_url_counts"),
                jobCpu, jobWall, Metrics.cpuSeconds(), Metrics.peakRssBytes(), parallelism, checkpointMs));
    }

    /**
     * A table's sink: Parquet files under {@code out/table/dt=/hour=/}, rolled
     * on every checkpoint (the only policy bulk formats have), so a file is
     * visible once its checkpoint completes, and the bounded job's final
     * checkpoint commits the last ones.
     */
    private static <T> FileSink<T> hourly(File out, String table, ParquetWriterFactory<T> writer,
            HourBucket.Time<T> time) {
        return FileSink.forBulkFormat(new Path(new File(out, table).toURI()), writer)
                .withBucketAssigner(new HourBucket<>(time))
                .withRollingPolicy(OnCheckpointRollingPolicy.build())
                .withOutputFileConfig(OutputFileConfig.builder()
                        .withPartPrefix("part")
                        .withPartSuffix(".parquet")
                        .build())
                .build();
    }

    private static long count(JobExecutionResult result, String name) {
        Object value = result.getAccumulatorResult(name);
        return value == null ? 0 : ((Number) value).longValue();
    }

    /** {@code --name value} pairs. */
    static final class Args {
        private Args() {}

        static Map<String, String> parse(String[] argv) {
            Map<String, String> args = new java.util.HashMap<>();
            for (int i = 0; i < argv.length; i++) {
                if (!argv[i].startsWith("--") || i + 1 == argv.length) {
                    throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
                }
                args.put(argv[i].substring(2), argv[++i]);
            }
            return args;
        }

        static String required(Map<String, String> args, String name) {
            String value = args.get(name);
            if (value == null) {
                throw new IllegalArgumentException("--" + name + " is required");
            }
            return value;
        }
    }
}
