"""Prints payflow's topics and decodes events the way the platform's services do: Confluent's
Consumer and AvroDeserializer, schemas read from the registry by the id in each value.

    python show_events.py BOOTSTRAP_SERVERS REGISTRY_URL [TOPIC_PREFIX]
"""

import sys
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    bootstrap, registry_url = sys.argv[1], sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"payflow-demo-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    topics = sorted(t for t in consumer.list_topics(timeout=10).topics
                    if t.startswith(prefix + "c4ang."))
    last = {}
    for topic in topics:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
            if high > low:
                last[(topic, p)] = high - 1
        print(f"  {topic:<40} partitions {len(partitions)}  records {total}")
    # The newest payment.completed, decoded.
    completed = [(t, p, o) for (t, p), o in last.items() if t.endswith("c4ang.payment.completed")]
    if not completed:
        print("  (no payment.completed yet)")
        return
    topic, partition, offset = completed[0]
    consumer.assign([TopicPartition(topic, partition, offset)])
    message = consumer.poll(10)
    if message is None or message.error():
        print(f"  could not read {topic}: {message and message.error()}")
        return
    schema_id = int.from_bytes(message.value()[1:5], "big")
    event = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
    print(f"  {topic} [{partition}@{offset}] key={message.key().decode()} schema id {schema_id}:")
    for name, value in event.items():
        print(f"    {name}: {value}")
    consumer.close()


if __name__ == "__main__":
    main()
