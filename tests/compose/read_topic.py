#!/usr/bin/env python3
"""Prints every record value of a Kafka topic (one per line) from the beginning to its current end.

Used by run-processes.sh instead of kcat: Debian's kcat links a librdkafka too old to talk to the
tansu broker; the confluent-kafka wheel bundles a current one.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to reach the end")
    args = parser.parse_args()
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "read-topic",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    metadata = consumer.list_topics(args.topic, timeout=args.timeout)
    partitions = metadata.topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    remaining = set(partitions)
    deadline = time.monotonic() + args.timeout
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == msg.error()._PARTITION_EOF:
                remaining.discard(msg.partition())
            continue
        sys.stdout.write(msg.value().decode("utf-8", "replace") + "\n")
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
