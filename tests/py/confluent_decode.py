"""Decodes payflow's Kafka values the way the platform's services do: with Confluent's own
deserializer, reading each writer schema from the schema registry by the id in the value.

Reads JSON lines {"topic": ..., "value": <base64>} on stdin; writes one JSON line per record:
{"ok": true, "record": {...}} or {"ok": false, "error": "..."}. Usage:
    python confluent_decode.py http://127.0.0.1:8081
"""

import base64
import decimal
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(value):
    """JSON-friendly: decimals as strings, bytes as hex."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main():
    client = SchemaRegistryClient({"url": sys.argv[1]})
    deserializer = AvroDeserializer(client)
    for line in sys.stdin:
        if not line.strip():
            continue
        item = json.loads(line)
        context = SerializationContext(item["topic"], MessageField.VALUE)
        try:
            record = deserializer(base64.b64decode(item["value"]), context)
            out = {"ok": True, "record": plain(record)}
        except Exception as e:  # every failure is reported, per record
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
