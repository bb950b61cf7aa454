package sqi.flinkpeer;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Turns each Kafka record into an {@link Event}, valid or not, inside the
 * source: the watermark strategy reads the event time of what comes out, so
 * the record must be decoded and its times checked by then (a refused time
 * must not move the watermark, as it does not move the processor's).
 */
final class KafkaEvents implements KafkaRecordDeserializationSchema<Event> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Event> out) {
        Event event = RecordParser.parse(record.value(), record.timestamp());
        DeadLetter source = new DeadLetter();
        source.topic = record.topic();
        source.partition = record.partition();
        source.offset = record.offset();
        source.key = record.key();
        source.value = record.value();
        event.source = source;
        out.collect(event);
    }

    @Override
    public TypeInformation<Event> getProducedType() {
        return TypeInformation.of(Event.class);
    }
}
