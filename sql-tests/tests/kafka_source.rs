//! The Kafka source against a real Kafka-protocol broker (Tansu, started by the test): both DDL
//! spellings, JSON/CSV/raw records, metadata columns, startup modes, several partitions with a
//! watermark each, an idle partition, malformed records into dead letters; views compared with
//! DataFusion's batch answer over the same records (an ad-hoc query reads the topic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rivulet_sql_tests::kafka::{Broker, Record};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

/// A bid as JSON, with its event time as text or epoch milliseconds.
fn bid(auction: i64, price: i64, second: i64, epoch_millis: bool) -> String {
    let ts = if epoch_millis {
        (1_714_564_800_000 + second * 1000).to_string()
    } else {
        let t = chrono::DateTime::from_timestamp(1_714_564_800 + second, 0).unwrap();
        format!("\"{}\"", t.format("%Y-%m-%d %H:%M:%S"))
    };
    format!("{{\"auction\": {auction}, \"price\": {price}, \"ts\": {ts}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flink_json_table_with_metadata_windows_and_dead_letters() {
    let broker = Broker::start().await.unwrap();
    broker.create_topic("bids", 3).await.unwrap();
    let producer = broker.producer().unwrap();
    // 3 partitions, each in event-time order within itself but not across partitions.
    let mut expected_rows = 0;
    for p in 0..3i32 {
        let values: Vec<String> = (0..200)
            .map(|i| bid(i % 7, i * 10 + p as i64, i + p as i64 * 3, i % 2 == 0))
            .collect();
        expected_rows += values.len();
        producer.send_values("bids", p, &values).unwrap();
    }
    // Two malformed records and one with a header and a key.
    producer
        .send(
            "bids",
            &[
                Record {
                    partition: 1,
                    value: Some(b"{\"auction\": 1, \"price\": "),
                    ..Record::default()
                },
                Record {
                    partition: 2,
                    value: Some(b"{\"auction\": \"x\", \"price\": 1}"),
                    ..Record::default()
                },
                Record {
                    partition: 0,
                    key: Some(b"k1"),
                    value: Some(bid(99, 5, 1000, false).as_bytes()),
                    headers: vec![("source", b"test")],
                    ..Record::default()
                },
            ],
        )
        .unwrap();
    expected_rows += 1;

    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3), \
               part INT METADATA FROM 'partition' VIRTUAL, off BIGINT METADATA FROM 'offset', \
               k VARCHAR METADATA FROM 'key', hdr VARCHAR METADATA FROM 'headers', \
               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH ('connector' = 'kafka', 'topic' = 'bids', \
                   'properties.bootstrap.servers' = '{}', 'properties.group.id' = 'rivulet', \
                   'scan.startup.mode' = 'earliest-offset', 'format' = 'json')",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_auction AS \
               SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction; \
             CREATE MATERIALIZED VIEW tumbling AS \
               SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top \
               FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
               GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE; \
             CREATE MATERIALIZED VIEW parts AS \
               SELECT part, count(*) AS n, min(off) AS first, max(off) AS last FROM bids GROUP BY part; \
             FLUSH;",
        )
        .await
        .unwrap();

    // Views equal DataFusion's batch answer over the topic's records.
    for (view, query) in [
        (
            "per_auction",
            "SELECT auction, count(*), sum(price) FROM bids GROUP BY auction",
        ),
        (
            "parts",
            "SELECT part, count(*), min(off), max(off) FROM bids GROUP BY part",
        ),
    ] {
        let got = sorted_rows(&client, &format!("SELECT * FROM {view}"))
            .await
            .unwrap();
        let want = sorted_rows(&client, query).await.unwrap();
        assert_eq!(got, want, "{view}");
        assert!(!got.is_empty());
    }
    let total = text_rows(&client, "SELECT sum(n) FROM per_auction")
        .await
        .unwrap();
    assert_eq!(total, vec![expected_rows.to_string()]);
    // Each partition's rows, offsets from 0 (the malformed records hold offsets too).
    assert_eq!(
        sorted_rows(&client, "SELECT * FROM parts").await.unwrap(),
        vec!["0|201|0|200", "1|200|0|199", "2|200|0|199"]
    );
    // Windows emitted on close: only those closed by every partition's watermark, the smallest
    // of partition 0's (1000 s - 5 s), partition 1's (202 s - 5 s) and partition 2's (205 s - 5 s).
    let closed = text_rows(&client, "SELECT count(*), max(window_start) FROM tumbling")
        .await
        .unwrap();
    let want = text_rows(
        &client,
        "SELECT count(*), max(window_start) FROM (SELECT auction, window_start \
         FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
         WHERE window_end <= TIMESTAMP '2024-05-01 12:00:00' + INTERVAL '197' SECOND \
         GROUP BY auction, window_start)",
    )
    .await
    .unwrap();
    assert_eq!(closed, want);
    // Metadata: key and headers.
    assert_eq!(
        text_rows(&client, "SELECT k, hdr, part FROM bids WHERE auction = 99")
            .await
            .unwrap(),
        vec!["k1|{\"source\":\"test\"}|0"]
    );
    // After each epoch the offsets are committed to the group (lag tools see them).
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "rivulet")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("bids", p);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        use rdkafka::consumer::Consumer;
        let committed: Vec<rdkafka::Offset> = consumer
            .committed_offsets(tpl.clone(), std::time::Duration::from_secs(5))
            .map(|c| c.elements().iter().map(|e| e.offset()).collect())
            .unwrap_or_default();
        let want: Vec<rdkafka::Offset> = [201, 201, 201]
            .into_iter()
            .map(rdkafka::Offset::Offset)
            .collect();
        if committed == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "committed {committed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The malformed records are dead letters, with partition and offset, and counted.
    let dead = sorted_rows(
        &client,
        "SELECT table_name, source, position, raw FROM rivulet_dead_letters",
    )
    .await
    .unwrap();
    assert_eq!(dead.len(), 6, "{dead:?}"); // two records, seen by each of three views
    assert!(dead.contains(&"bids|bids/1|200|{\"auction\": 1, \"price\": ".to_string()));
    assert!(
        dead.iter()
            .any(|d| d.starts_with("bids|bids/2|200|{\"auction\": \"x\""))
    );
    // Per partition: the next offset, the high watermark (asked at each partition discovery,
    // every 5 s) and the consumer lag, nothing once everything is read.
    eventually(
        &client,
        "SELECT split, position, end_position, lag FROM rivulet_sources WHERE job_name = 'parts'",
        &["bids/0|201|201|0", "bids/1|201|201|0", "bids/2|201|201|0"],
    )
    .await;
}

/// Polls `sql` until it returns `want` (a changelog table is fed asynchronously), for 20 s.
async fn eventually(client: &tokio_postgres::Client, sql: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let got = sorted_rows(client, sql).await.unwrap();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_and_debezium_tables_in_both_spellings() {
    let broker = Broker::start().await.unwrap();
    broker.create_topic("users", 2).await.unwrap();
    broker.create_topic("orders", 1).await.unwrap();
    let producer = broker.producer().unwrap();
    let upsert = |partition: i32, key: &'static str, value: Option<&'static str>| Record {
        partition,
        key: Some(key.as_bytes()),
        value: value.map(str::as_bytes),
        ..Record::default()
    };
    producer
        .send(
            "users",
            &[
                upsert(0, "{\"id\": 1}", Some("{\"id\": 1, \"name\": \"ann\"}")),
                upsert(1, "{\"id\": 2}", Some("{\"id\": 2, \"name\": \"bob\"}")),
                upsert(0, "{\"id\": 1}", Some("{\"id\": 1, \"name\": \"amy\"}")),
                upsert(1, "{\"id\": 3}", Some("{\"id\": 3, \"name\": \"cat\"}")),
                upsert(1, "{\"id\": 2}", None),
                upsert(0, "{\"id\": 4}", Some("{\"id\": 4, \"name\": ")),
            ],
        )
        .unwrap();
    let event = |value: &'static str| Record {
        partition: 0,
        value: Some(value.as_bytes()),
        ..Record::default()
    };
    producer
        .send(
            "orders",
            &[
                event("{\"before\": null, \"after\": {\"id\": 1, \"amount\": 10}, \"op\": \"c\"}"),
                event("{\"before\": null, \"after\": {\"id\": 2, \"amount\": 20}, \"op\": \"r\"}"),
                event(
                    "{\"schema\": {}, \"payload\": {\"before\": {\"id\": 1, \"amount\": 10}, \
                     \"after\": {\"id\": 1, \"amount\": 15}, \"op\": \"u\"}}",
                ),
                event("{\"before\": {\"id\": 2, \"amount\": 20}, \"after\": null, \"op\": \"d\"}"),
                event("{\"before\": null, \"after\": null, \"op\": \"z\"}"),
                event("{\"before\": null, \"after\": {\"id\": 3, \"amount\": 7}, \"op\": \"c\"}"),
            ],
        )
        .unwrap();

    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    let bootstrap = broker.bootstrap();
    c.batch_execute(&format!(
        "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR) \
         WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{bootstrap}') \
         FORMAT UPSERT ENCODE JSON; \
         CREATE TABLE users_flink (id INT, name STRING, PRIMARY KEY (id) NOT ENFORCED) \
         WITH ('connector' = 'upsert-kafka', 'topic' = 'users', \
               'properties.bootstrap.servers' = '{bootstrap}', \
               'key.format' = 'json', 'value.format' = 'json'); \
         CREATE TABLE orders (id INT PRIMARY KEY, amount BIGINT) \
         WITH ('connector' = 'kafka', 'topic' = 'orders', \
               'properties.bootstrap.servers' = '{bootstrap}', \
               'scan.startup.mode' = 'earliest-offset', 'format' = 'debezium-json'); \
         CREATE MATERIALIZED VIEW user_names AS SELECT count(*) AS n, max(name) AS last FROM users; \
         CREATE MATERIALIZED VIEW order_total AS SELECT count(*) AS n, sum(amount) AS total FROM orders;"
    ))
    .await
    .unwrap();
    eventually(&c, "SELECT * FROM users", &["1|amy", "3|cat"]).await;
    eventually(&c, "SELECT * FROM users_flink", &["1|amy", "3|cat"]).await;
    eventually(&c, "SELECT * FROM user_names", &["2|cat"]).await;
    eventually(&c, "SELECT * FROM orders", &["1|15", "3|7"]).await;
    eventually(&c, "SELECT * FROM order_total", &["2|22"]).await;
    // Malformed records are dead letters of the tables, once each.
    eventually(
        &c,
        "SELECT job_name, source, position FROM rivulet_dead_letters",
        &[
            "orders|orders/0|4",
            "users_flink|users/0|2",
            "users|users/0|2",
        ],
    )
    .await;
    // Changelog tables need a key; a plain one is still append-only.
    let err = c
        .batch_execute(&format!(
            "CREATE TABLE nokey (id INT) WITH (connector = 'kafka', topic = 'users', \
             properties.bootstrap.server = '{bootstrap}') FORMAT UPSERT ENCODE JSON"
        ))
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("needs a PRIMARY KEY")),
        "{err:?}"
    );
    let err = c
        .batch_execute(&format!(
            "CREATE TABLE missing (id INT) WITH (connector = 'kafka', topic = 'nope', \
             properties.bootstrap.server = '{bootstrap}') FORMAT PLAIN ENCODE JSON"
        ))
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("topic \"nope\"")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_does_not_hold_windows_open() {
    let broker = Broker::start().await.unwrap();
    broker.create_topic("quiet", 2).await.unwrap();
    let producer = broker.producer().unwrap();
    // Partition 0 has a row per second for 30 s of event time; partition 1 stays empty.
    let values: Vec<String> = (0..30).map(|s| bid(1, s, s, false)).collect();
    producer.send_values("quiet", 0, &values).unwrap();
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    for (table, idle) in [
        ("held", ""),
        ("idle", ", 'scan.watermark.idle-timeout' = '1 s'"),
    ] {
        c.batch_execute(&format!(
            "CREATE TABLE {table} (auction BIGINT, price BIGINT, ts TIMESTAMP(3), \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH ('connector' = 'kafka', 'topic' = 'quiet', \
                   'properties.bootstrap.servers' = '{}', 'format' = 'json'{idle}); \
             CREATE MATERIALIZED VIEW {table}_windows AS \
               SELECT window_start, count(*) AS n FROM TUMBLE({table}, ts, INTERVAL '10' SECOND) \
               GROUP BY window_start EMIT ON WINDOW CLOSE;",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    }
    // With the idle timeout, the empty partition stops counting and the windows before the
    // data's watermark close; without it, the empty partition holds every window open.
    eventually(
        &c,
        "SELECT * FROM idle_windows WHERE window_start < '2024-05-01 12:00:20'",
        &["2024-05-01 12:00:00|10", "2024-05-01 12:00:10|10"],
    )
    .await;
    assert!(
        text_rows(&c, "SELECT * FROM held_windows")
            .await
            .unwrap()
            .is_empty()
    );
}
