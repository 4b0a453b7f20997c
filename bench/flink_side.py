"""The Flink side of `scripts/bench flink`: one query of the Rivulet-vs-Flink table on Flink 1.20.

Usage: python flink_side.py QUERY BIDS_JSONL
Prints one line `RESULT {json}`: rows, seconds from submission to done, and the JVM's CPU seconds
(user + system of the java child process, from /proc), the per-core figure on a shared machine.
Parallelism 1, no checkpoints, a blackhole sink: Flink at its fastest.
"""
import json
import os
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

QUERIES = {
    "projection": (
        "auction BIGINT, bidder BIGINT, price_eur DOUBLE, ts TIMESTAMP_LTZ(3)",
        "SELECT auction, bidder, 0.908 * price, ts FROM bid WHERE auction % 123 <> 0",
    ),
    "tumble": (
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, cnt BIGINT, total BIGINT",
        "SELECT window_start, window_end, auction, COUNT(*), SUM(price) "
        "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end, auction",
    ),
    "hop": (
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, cnt BIGINT",
        "SELECT window_start, window_end, auction, COUNT(*) "
        "FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end, auction",
    ),
    "session": (
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), bidder BIGINT, cnt BIGINT, top BIGINT",
        "SELECT window_start, window_end, bidder, COUNT(*), MAX(price) "
        "FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end, bidder",
    ),
    "topn": (
        "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP_LTZ(3)",
        "SELECT auction, bidder, price, ts FROM (SELECT auction, bidder, price, ts, "
        "ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) "
        "WHERE rn <= 10",
    ),
    "dedup": (
        "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP_LTZ(3)",
        "SELECT auction, bidder, price, ts FROM (SELECT auction, bidder, price, ts, "
        "ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY ts DESC) AS rn FROM bid) "
        "WHERE rn = 1",
    ),
    "over": (
        "auction BIGINT, price BIGINT, ts TIMESTAMP_LTZ(3), total BIGINT",
        "SELECT auction, price, ts, SUM(price) OVER (PARTITION BY auction ORDER BY ts "
        "RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM bid",
    ),
}


def jvm_cpu_seconds():
    total = 0.0
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        name_end = stat.rfind(")")
        fields = stat[name_end + 2:].split()
        if int(fields[1]) == me and "java" in stat[:name_end]:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main():
    query, path = sys.argv[1], sys.argv[2]
    sink_columns, select = QUERIES[query]
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.exec.resource.default-parallelism", "1")
    conf.set("pipeline.operator-chaining.enabled", "true")
    env.execute_sql(
        f"""CREATE TABLE bid (
          auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
          date_time BIGINT, extra STRING,
          ts AS TO_TIMESTAMP_LTZ(date_time, 3),
          WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'json')"""
    )
    env.execute_sql(f"CREATE TABLE sink ({sink_columns}) WITH ('connector' = 'blackhole')")
    cpu0, t0 = jvm_cpu_seconds(), time.time()
    env.execute_sql(f"INSERT INTO sink {select}").wait()
    cpu1, t1 = jvm_cpu_seconds(), time.time()
    rows = sum(1 for _ in open(path, "rb"))
    print("RESULT " + json.dumps({"query": query, "rows": rows, "seconds": round(t1 - t0, 2),
                                  "cpu_seconds": round(cpu1 - cpu0, 2)}), flush=True)


if __name__ == "__main__":
    main()
