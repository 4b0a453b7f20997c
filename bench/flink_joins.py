"""The Flink side of `scripts/bench joins`: one Nexmark join (or MATCH_RECOGNIZE) query on Flink 1.20.

Usage: python flink_joins.py QUERY DIR
DIR holds person.jsonl, auction.jsonl and bid.jsonl (written by the Rivulet side). Prints one line
`RESULT {json}`: rows read, seconds from submission to done, and the JVM's CPU seconds (user +
system of the java child process, from /proc). Parallelism 1, no checkpoints, heap state, a
blackhole sink: Flink at its fastest.
"""
import json
import os
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

QUERIES = {
    "q3": (
        ["person", "auction"],
        "name STRING, city STRING, state STRING, id BIGINT",
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P "
        "ON A.seller = P.id WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
    ),
    "q8": (
        ["person", "auction"],
        "id BIGINT, name STRING, starttime TIMESTAMP(3)",
        "SELECT P.id, P.name, P.starttime FROM ("
        " SELECT id, name, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
        " GROUP BY id, name, window_start, window_end) P "
        "JOIN ("
        " SELECT seller, window_start AS starttime, window_end AS endtime"
        " FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
        " GROUP BY seller, window_start, window_end) A "
        "ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
    ),
    "q4": (
        ["auction", "bid"],
        "category BIGINT, avg_final BIGINT",
        "SELECT Q.category, AVG(Q.final) FROM ("
        " SELECT MAX(B.price) AS final, A.category FROM auction A, bid B"
        " WHERE A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires_ts"
        " GROUP BY A.id, A.category) Q GROUP BY Q.category",
    ),
    "cep": (
        ["bid"],
        "auction BIGINT, start_price BIGINT, top BIGINT, drop_price BIGINT",
        "SELECT * FROM bid MATCH_RECOGNIZE ("
        " PARTITION BY auction ORDER BY ts"
        " MEASURES A.price AS start_price, LAST(B.price) AS top, C.price AS drop_price"
        " ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW"
        " PATTERN (A B+ C) WITHIN INTERVAL '10' SECOND"
        " DEFINE B AS (LAST(B.price, 1) IS NULL AND B.price > A.price) OR B.price > LAST(B.price, 1),"
        " C AS C.price < LAST(B.price))",
    ),
}

DDL = {
    "person": """CREATE TABLE person (
        id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING,
        date_time BIGINT, extra STRING,
        ts AS TO_TIMESTAMP_LTZ(date_time, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = 'file://{dir}/person.jsonl', 'format' = 'json')""",
    "auction": """CREATE TABLE auction (
        id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT,
        date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING,
        ts AS TO_TIMESTAMP_LTZ(date_time, 3), expires_ts AS TO_TIMESTAMP_LTZ(expires, 3),
        WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = 'file://{dir}/auction.jsonl', 'format' = 'json')""",
    "bid": """CREATE TABLE bid (
        auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
        date_time BIGINT, extra STRING,
        ts AS TO_TIMESTAMP_LTZ(date_time, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = 'file://{dir}/bid.jsonl', 'format' = 'json')""",
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
    query, directory = sys.argv[1], sys.argv[2]
    tables, sink_columns, select = QUERIES[query]
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.exec.resource.default-parallelism", "1")
    conf.set("pipeline.operator-chaining.enabled", "true")
    conf.set("heartbeat.timeout", "600000")
    for t in tables:
        env.execute_sql(DDL[t].format(dir=directory))
    env.execute_sql(f"CREATE TABLE sink ({sink_columns}) WITH ('connector' = 'blackhole')")
    cpu0, t0 = jvm_cpu_seconds(), time.time()
    env.execute_sql(f"INSERT INTO sink {select}").wait()
    cpu1, t1 = jvm_cpu_seconds(), time.time()
    rows = sum(sum(1 for _ in open(f"{directory}/{t}.jsonl", "rb")) for t in tables)
    print("RESULT " + json.dumps({"query": query, "rows": rows, "seconds": round(t1 - t0, 2),
                                  "cpu_seconds": round(cpu1 - cpu0, 2)}), flush=True)


if __name__ == "__main__":
    main()
