#!/usr/bin/env python3
"""Prints every record value of a Kafka topic (one per line) from the beginning to its current end.

An independent reader (the confluent-kafka client, none of Veto's code) for the compose process
test and the crash tests; `--isolation read_committed` shows only committed transactions, as a
payments system reading Veto's exactly-once decisions would.
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
    parser.add_argument("--isolation", choices=["read_uncommitted", "read_committed"],
                        default="read_uncommitted")
    args = parser.parse_args()
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "read-topic",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": args.isolation})
    metadata = consumer.list_topics(args.topic, timeout=args.timeout)
    partitions = metadata.topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    remaining = set(partitions)
    deadline = time.monotonic() + args.timeout
    out = sys.stdout.buffer
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == msg.error()._PARTITION_EOF:
                remaining.discard(msg.partition())
            continue
        out.write(msg.value() + b"\n")
    consumer.close()
    if remaining:
        print(f"read_topic.py: {args.topic} partitions {sorted(remaining)} not read to their end "
              f"within {args.timeout} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
