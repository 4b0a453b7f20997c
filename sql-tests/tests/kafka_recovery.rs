//! Kill -9 under load: a producer writes a seeded, out-of-order stream to a 3-partition topic
//! while the test kills the server at random moments (several rounds) and once stops and
//! restarts the broker; after catch-up every view equals DataFusion's batch answer over all the
//! produced records (an ad-hoc query reads the topic) and the test's own count: nothing lost,
//! nothing counted twice, each malformed record kept once per view; an upsert table fed from a
//! second topic holds each key's last value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rivulet_sql_tests::kafka::{Broker, Record, read_partition};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

const RECORDS: usize = 60_000;
const CHUNK: usize = 600;
/// 2026-01-01 00:00:00 in milliseconds since the epoch.
const BASE_MS: i64 = 1_767_225_600_000;

/// The stream: record `i` goes to partition `i % 3`, its event time runs 1 ms per record and
/// is out of order by up to 2 s; every 10,000th record is malformed.
fn record(i: usize, rng: &mut rand::rngs::StdRng) -> (i32, String, Option<i64>) {
    let partition = (i % 3) as i32;
    if i % 10_000 == 4_999 {
        return (partition, format!("{{\"id\": {i}, \"k\": "), None);
    }
    let ts = BASE_MS + i as i64 - rng.random_range(0..2000);
    (
        partition,
        format!(
            "{{\"id\": {i}, \"k\": {}, \"v\": {}, \"ts\": {ts}}}",
            i % 13,
            (i * 7) % 100
        ),
        Some(ts),
    )
}

async fn connect(server: &TestServer) -> tokio_postgres::Client {
    server.connect("dev").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_kafka_are_exactly_once_across_kill_9_and_a_broker_restart() {
    let mut broker = Broker::start().await.unwrap();
    broker.create_topic("events", 3).await.unwrap();
    broker.create_topic("accounts", 2).await.unwrap();
    let bootstrap = broker.bootstrap();
    // An upsert topic alongside: record `j` sets account `j % 500` to `j`, or (every 7th)
    // deletes it; an account's records all go to one partition, so their order holds.
    let upserts: Vec<(i32, String, Option<String>)> = (0..30_000usize)
        .map(|j| {
            let id = j % 500;
            let value = (j % 7 != 3).then(|| format!("{{\"id\": {id}, \"balance\": {j}}}"));
            ((id % 2) as i32, format!("{{\"id\": {id}}}"), value)
        })
        .collect();
    let mut accounts = std::collections::BTreeMap::new();
    for (j, (_, _, v)) in upserts.iter().enumerate() {
        match v {
            Some(_) => accounts.insert(j % 500, j),
            None => accounts.remove(&(j % 500)),
        };
    }

    // The stream, and the largest event time per partition.
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let stream: Vec<(i32, String, Option<i64>)> =
        (0..RECORDS).map(|i| record(i, &mut rng)).collect();
    let mut max_ts = [i64::MIN; 3];
    for (p, _, ts) in &stream {
        if let Some(ts) = ts {
            max_ts[*p as usize] = max_ts[*p as usize].max(*ts);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    connect(&server)
        .await
        .batch_execute(&format!(
            "CREATE TABLE events (id BIGINT, k INT, v BIGINT, ts TIMESTAMP(3), \
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             WITH (connector = 'kafka', topic = 'events', \
                   properties.bootstrap.server = '{bootstrap}', scan.startup.mode = 'earliest') \
             FORMAT PLAIN ENCODE JSON; \
             CREATE MATERIALIZED VIEW per_key AS \
               SELECT k, count(*) AS n, sum(v) AS total, sum(id) AS ids FROM events GROUP BY k; \
             CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT) \
             WITH (connector = 'kafka', topic = 'accounts', \
                   properties.bootstrap.server = '{bootstrap}') FORMAT UPSERT ENCODE JSON; \
             CREATE MATERIALIZED VIEW balances AS \
               SELECT count(*) AS n, sum(balance) AS total FROM accounts; \
             CREATE MATERIALIZED VIEW per_second AS \
               SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total \
               FROM TUMBLE(events, ts, INTERVAL '1' SECOND) \
               GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE;"
        ))
        .await
        .unwrap();

    // The producer writes the stream in chunks, pausing between them.
    let producer = broker.producer().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let chunks: Vec<Vec<(i32, String)>> = stream
        .chunks(CHUNK)
        .map(|c| c.iter().map(|(p, v, _)| (*p, v.clone())).collect())
        .collect();
    let upsert_chunks: Vec<Vec<(i32, String, Option<String>)>> = upserts
        .chunks(upserts.len().div_ceil(chunks.len()))
        .map(<[_]>::to_vec)
        .collect();
    let writer = std::thread::spawn(move || {
        for (n, chunk) in chunks.into_iter().enumerate() {
            if let Some(up) = upsert_chunks.get(n) {
                let records: Vec<Record<'_>> = up
                    .iter()
                    .map(|(p, k, v)| Record {
                        partition: *p,
                        key: Some(k.as_bytes()),
                        value: v.as_deref().map(str::as_bytes),
                        ..Record::default()
                    })
                    .collect();
                producer.send("accounts", &records).unwrap();
            }
            for p in 0..3 {
                let values: Vec<String> = chunk
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, v)| v.clone())
                    .collect();
                // While the broker is down, the records wait in the producer's queue.
                producer.send_values("events", p, &values).unwrap();
            }
            if rx.try_recv().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(35));
        }
    });

    // Kill -9 at random moments while the producer writes; once, the broker goes down too.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills_under_load = 0;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        if !writer.is_finished() {
            kills_under_load += 1;
        }
        server.kill9().await.unwrap();
        if round == 1 {
            broker.stop().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            // The job retries the broker and says so.
            let c = connect(&server).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = false;
            while !seen && Instant::now() < deadline {
                let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
                seen = jobs.iter().any(|j| j.contains("|retrying|"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(seen, "no job showed the broker being down");
            // An ad-hoc query over the topic fails, naming the trouble, rather than waiting.
            let adhoc = tokio::time::timeout(
                Duration::from_secs(20),
                c.simple_query("SELECT count(*) FROM events"),
            )
            .await
            .expect("an ad-hoc query returns while the broker is down");
            let err = adhoc.expect_err("no broker, no rows");
            assert!(
                err.as_db_error()
                    .is_some_and(|e| e.message().contains("kafka")),
                "{err:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            broker.restart().await.unwrap();
        } else {
            server = TestServer::start_in(dir.path()).await.unwrap();
        }
    }
    // A slow machine may let the producer finish before the last kill, not before the third.
    assert!(
        kills_under_load >= 3,
        "only {kills_under_load} of 4 kills came while the producer wrote"
    );
    // The producer finishes; the views catch up.
    let finished = tokio::task::spawn_blocking(move || writer.join()).await;
    drop(tx);
    finished.unwrap().unwrap();
    let c = connect(&server).await;
    tokio::time::timeout(Duration::from_secs(120), c.batch_execute("FLUSH"))
        .await
        .expect("FLUSH within 2 minutes")
        .unwrap();

    // What the topic holds. The test's producer is not idempotent (the broker has no
    // transactions), so a produce request whose acknowledgement the broker's restart lost is
    // sent again by librdkafka, and a partition may hold that batch twice (seen: 200 records,
    // one partition's share of one chunk). Exactly once is against what the topic holds.
    let mut held: Vec<usize> = Vec::with_capacity(RECORDS);
    for p in 0..3 {
        for text in read_partition(&bootstrap, "events", p).unwrap() {
            let id = text
                .strip_prefix("{\"id\": ")
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<usize>().ok())
                .expect("an event starts with its id");
            held.push(id);
        }
    }
    let distinct: std::collections::BTreeSet<usize> = held.iter().copied().collect();
    assert_eq!(distinct.len(), RECORDS, "the topic lost records");
    if held.len() > RECORDS {
        eprintln!("the producer wrote {} records twice", held.len() - RECORDS);
    }
    let good = held.iter().filter(|&&i| stream[i].2.is_some()).count();
    let bad = held.len() - good;
    let ids: i64 = held
        .iter()
        .filter(|&&i| stream[i].2.is_some())
        .map(|&i| i as i64)
        .sum();
    // Nothing lost, nothing twice.
    assert_eq!(
        text_rows(&c, "SELECT sum(n), sum(ids) FROM per_key")
            .await
            .unwrap(),
        vec![format!("{good}|{ids}")]
    );
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM per_key").await.unwrap(),
        sorted_rows(
            &c,
            "SELECT k, count(*), sum(v), sum(id) FROM events GROUP BY k"
        )
        .await
        .unwrap()
    );
    // Windows closed by the smallest partition watermark, equal to the batch answer.
    let watermark = max_ts.iter().min().unwrap() - 2000;
    let closed_before = chrono::DateTime::from_timestamp_millis(watermark)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    let got = sorted_rows(&c, "SELECT * FROM per_second").await.unwrap();
    let want = sorted_rows(
        &c,
        &format!(
            "SELECT k, window_start, window_end, count(*), sum(v) \
             FROM TUMBLE(events, ts, INTERVAL '1' SECOND) \
             WHERE window_end <= TIMESTAMP '{closed_before}' \
             GROUP BY k, window_start, window_end"
        ),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // The upsert table holds each account's last value, and its view agrees, once caught up.
    let want_accounts: Vec<String> = {
        let mut v: Vec<String> = accounts.iter().map(|(id, b)| format!("{id}|{b}")).collect();
        v.sort();
        v
    };
    let want_balances = vec![format!(
        "{}|{}",
        accounts.len(),
        accounts.values().sum::<usize>()
    )];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.batch_execute("FLUSH").await.unwrap();
        let got = sorted_rows(&c, "SELECT * FROM accounts").await.unwrap();
        let view = text_rows(&c, "SELECT * FROM balances").await.unwrap();
        if got == want_accounts && view == want_balances {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accounts: {} rows of {}, view {view:?} vs {want_balances:?}",
            got.len(),
            want_accounts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each malformed record is one dead letter per view.
    assert_eq!(
        sorted_rows(
            &c,
            "SELECT job_name, count(*) FROM rivulet_dead_letters GROUP BY job_name"
        )
        .await
        .unwrap(),
        vec![format!("per_key|{bad}"), format!("per_second|{bad}")]
    );
    server.kill9().await.unwrap();
    broker.stop().await.unwrap();
}
