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
}
