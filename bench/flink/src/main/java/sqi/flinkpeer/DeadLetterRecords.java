package sqi.flinkpeer;

import java.nio.charset.StandardCharsets;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;

/** A dead letter as the processor sends it: the original key and value, where from and why in headers. */
final class DeadLetterRecords implements KafkaRecordSerializationSchema<DeadLetter> {
    private static final long serialVersionUID = 1L;
    private final String topic;

    DeadLetterRecords(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(DeadLetter d, KafkaSinkContext context, Long timestamp) {
        RecordHeaders headers = new RecordHeaders();
        headers.add("sqi.dlq.topic", utf8(d.topic));
        headers.add("sqi.dlq.partition", utf8(Integer.toString(d.partition)));
        headers.add("sqi.dlq.offset", utf8(Long.toString(d.offset)));
        headers.add("sqi.dlq.error", utf8(d.error));
        return new ProducerRecord<>(topic, null, null, d.key, d.value, headers);
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
