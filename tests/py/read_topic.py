#!/usr/bin/env python3
"""Reads a Kafka topic with confluent-kafka (librdkafka from PyPI), not with SQI Engine.

Usage: read_topic.py BROKERS TOPIC EXPECTED [TIMEOUT_S]. Reads from the earliest
offset until EXPECTED records arrive or the timeout passes, then prints JSON:
a list of {"key", "value", "partition", "offset", "headers"}, with value parsed
as JSON when it is JSON. When BROKERS is the test broker's SASL_SSL listener
(SQI_TEST_KAFKA_SASL_BROKERS), it connects with SCRAM-SHA-512 and the test CA.
"""
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer


def main():
    brokers, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    config = {
        "bootstrap.servers": brokers,
        "group.id": "independent-reader-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if brokers == os.environ.get("SQI_TEST_KAFKA_SASL_BROKERS"):
        config.update(
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": os.environ["SQI_TEST_KAFKA_USERNAME"],
                "sasl.password": os.environ["SQI_TEST_KAFKA_PASSWORD"],
                "ssl.ca.location": os.environ["SQI_TEST_KAFKA_CA_FILE"],
            }
        )
    consumer = Consumer(config)
    consumer.subscribe([topic])
    records = []
    deadline = time.time() + timeout
    while len(records) < expected and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            continue
        raw = message.value()
        try:
            value = json.loads(raw)
        except (ValueError, TypeError):
            value = None if raw is None else raw.decode("utf-8", "replace")
        key = message.key()
        records.append(
            {
                "key": None if key is None else key.decode("utf-8", "replace"),
                "value": value,
                "partition": message.partition(),
                "offset": message.offset(),
                "headers": {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (message.headers() or [])},
            }
        )
    # Linger briefly to catch records beyond the expected count (duplicates).
    extra_deadline = time.time() + 1.0
    while time.time() < extra_deadline:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            records.append({"key": None, "value": "UNEXPECTED EXTRA RECORD", "partition": message.partition(), "offset": message.offset(), "headers": {}})
    consumer.close()
    print(json.dumps(records))


if __name__ == "__main__":
    main()
