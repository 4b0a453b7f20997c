#!/usr/bin/env python3
"""Sample events for the Docker demo: Nexmark-like bids, as JSON, to a Kafka topic, keyed by auction.

    {"auction": 1042, "bidder": 2317, "price": 118, "ts": "2026-05-01 12:00:00.123"}

Auctions open one after another (a new one every 20 bids) and about a hundred are open at a time,
the newest five drawing half of the bids; prices spread from 1 to 10,000, mostly low. The event
time is the wall clock, up to 2 s late (the table's watermark allows 5 s), in UTC.

Environment: BOOTSTRAP_SERVERS (default kafka:9092), TOPIC (bids), RATE (bids per second, 100).
docker-compose.yml runs it in python:3.12-slim with confluent-kafka installed by pip.

`producer.py --print N` writes the first N records, `key<TAB>value` per line, to stdout instead,
with event times from a fixed start RATE per second apart and a fixed seed, and needs no Kafka
client: sql-tests/tests/docker_compose.rs feeds them through docker/init.sql.
"""

import datetime
import os
import random
import signal
import sys
import time

# Where --print starts its event time: 2026-05-01 12:00:00 UTC, in epoch milliseconds.
PRINT_START_MS = 1_777_636_800_000


def bid(rng, n, now_ms):
    """The n-th bid as (key, value), with event time at most 2 s before now_ms."""
    newest = 1100 + n // 20
    if rng.random() < 0.5:
        auction = newest - rng.randrange(5)
    else:
        auction = newest - rng.randrange(100)
    bidder = 2000 + rng.randrange(1000)
    price = int(10 ** (rng.random() * 4))
    ts_ms = now_ms - rng.randrange(2000)
    ts = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.timezone.utc)
    text = ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts_ms % 1000:03d}"
    value = f'{{"auction": {auction}, "bidder": {bidder}, "price": {price}, "ts": "{text}"}}'
    return str(auction), value


def print_records(count, rate):
    rng = random.Random(42)
    for n in range(count):
        key, value = bid(rng, n, PRINT_START_MS + int(n * 1000 / rate))
        print(f"{key}\t{value}")


def produce(servers, topic, rate):
    # Imported here: --print runs without the client library.
    from confluent_kafka import Producer

    failed = 0

    def delivered(err, _msg):
        nonlocal failed
        if err is not None:
            failed += 1
            if failed <= 10 or failed % 1000 == 0:
                print(f"delivery failed ({failed} so far): {err}", file=sys.stderr, flush=True)

    producer = Producer(
        {"bootstrap.servers": servers, "client.id": "rivulet-demo-producer", "linger.ms": 20}
    )
    rng = random.Random()
    start = time.monotonic()
    next_report = start + 10
    n = 0
    print(f"producing {rate:g} bids/s to {topic} at {servers}", flush=True)
    try:
        while True:
            # Send every bid due by now, then wait (serving delivery reports) until the next is due.
            due = int((time.monotonic() - start) * rate)
            while n < due:
                key, value = bid(rng, n, int(time.time() * 1000))
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=delivered)
                except BufferError:
                    producer.poll(0.1)  # local queue full: the broker is slow or away
                    continue
                n += 1
            now = time.monotonic()
            if now >= next_report:
                print(f"{n} bids sent, {failed} failed", flush=True)
                next_report = now + 10
            producer.poll(max(0.0, min(0.1, start + (n + 1) / rate - now)))
    finally:
        producer.flush(5)


def main():
    try:
        rate = float(os.environ.get("RATE", "100"))
    except ValueError:
        rate = 0
    if not rate > 0:
        sys.exit(f"RATE must be a positive number of bids per second, not {os.environ['RATE']!r}")
    if len(sys.argv) == 3 and sys.argv[1] == "--print":
        print_records(int(sys.argv[2]), rate)
        return
    if len(sys.argv) != 1:
        sys.exit(f"usage: {sys.argv[0]} [--print N]")
    # As PID 1 in a container the default SIGTERM action is ignored: exit (and flush) instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    produce(
        os.environ.get("BOOTSTRAP_SERVERS", "kafka:9092"),
        os.environ.get("TOPIC", "bids"),
        rate,
    )


if __name__ == "__main__":
    main()
