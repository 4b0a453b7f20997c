//! Sinks across kill -9: rows inserted in rounds, the server killed mid-way through each round
//! while its sink jobs write, restarted from its checkpoints; at the end every inserted row must
//! be in the sink's output. The filesystem sink is exactly-once (each row in exactly one
//! committed part file); the Kafka sink (Tansu broker) is at-least-once: no row lost, also while
//! the broker is down for a while, and the duplicates are counted and reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rivulet_sql_tests::kafka::Broker;
use rivulet_sql_tests::{TestServer, text_rows};

const ROUNDS: usize = 4;
const STATEMENTS: usize = 10;
const ROWS: usize = 300;

/// Inserts round `round`'s rows (ids `round * STATEMENTS * ROWS ..`), one statement per chunk.
async fn insert_round(client: &tokio_postgres::Client, round: usize) {
    for s in 0..STATEMENTS {
        let first = (round * STATEMENTS + s) * ROWS;
        let values: Vec<String> = (first..first + ROWS)
            .map(|i| format!("({i}, {})", i % 17))
            .collect();
        client
            .simple_query(&format!("INSERT INTO events VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
}

/// Runs the rounds: each inserts its rows and kills the server at a random moment after, then
/// starts it again on the same data directory. Returns the last server, flushed.
async fn rounds(dir: &std::path::Path, mut server: TestServer, seed: u64) -> TestServer {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..ROUNDS {
        let client = server.connect("dev").await.unwrap();
        insert_round(&client, round).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        server.kill9().await.unwrap();
        server = TestServer::start_in(dir).await.unwrap();
    }
    let client = server.connect("dev").await.unwrap();
    client.simple_query("FLUSH").await.unwrap();
    server
}

/// How often each id occurs among `ids`.
fn counts(ids: impl Iterator<Item = u64>) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// The `"id"` of a JSON row `{"id":N,...}`.
fn json_id(line: &str) -> u64 {
    let rest = line.split_once("\"id\":").expect("an id").1;
    rest.split([',', '}'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Starts a server on `dir` with table `events` and the sink `CREATE SINK <sink>` creates.
async fn start_with_sink(dir: &std::path::Path, sink: &str) -> TestServer {
    let server = TestServer::start_in(dir).await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .simple_query("CREATE TABLE events (id BIGINT, k BIGINT) APPEND ONLY")
        .await
        .unwrap();
    client
        .simple_query(&format!("CREATE SINK {sink}"))
        .await
        .unwrap();
    server
}

/// Rows of `total` ids missing from `seen`, and occurrences beyond the first.
fn lost_and_duplicated(seen: &BTreeMap<u64, u32>, total: u64) -> (usize, u32) {
    let lost = (0..total).filter(|i| !seen.contains_key(i)).count();
    (lost, seen.values().map(|c| c - 1).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_commits_every_row_exactly_once_across_kill_9() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sink = format!(
        "files AS SELECT id, k FROM events WHERE k >= 0 WITH (connector = 'filesystem', \
         path = '{}', format = 'json')",
        out.path().display()
    );
    let server = start_with_sink(data.path(), &sink).await;
    let server = rounds(data.path(), server, 22).await;
    let mut lines = Vec::new();
    let mut in_progress = 0;
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(text.lines().map(str::to_string));
        } else {
            in_progress += 1;
        }
    }
    let seen = counts(lines.iter().map(|l| json_id(l)));
    let total = (ROUNDS * STATEMENTS * ROWS) as u64;
    let (lost, duplicated) = lost_and_duplicated(&seen, total);
    eprintln!(
        "file sink: {} rows in committed files, {lost} lost, {duplicated} duplicated, {} s",
        lines.len(),
        started.elapsed().as_secs()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(seen.len() as u64, total);
    assert_eq!(
        in_progress, 0,
        "an in-progress file was left after the flush"
    );
    // SHOW SINKS lists it with what it committed.
    let client = server.connect("dev").await.unwrap();
    let sinks = text_rows(&client, "SHOW SINKS").await.unwrap();
    assert_eq!(sinks.len(), 1, "{sinks:?}");
    let fields: Vec<&str> = sinks[0].split('|').collect();
    assert_eq!(
        &fields[..4],
        [
            "files",
            "filesystem",
            &out.path().display().to_string(),
            "exactly-once"
        ]
    );
    assert_eq!(fields[4], "running");
    assert!(fields[5].parse::<u64>().unwrap() > 0, "{sinks:?}");
}

/// Every record of partition 0 of `topic`, from its start.
fn read_topic(bootstrap: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sink-test")
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < high {
        assert!(Instant::now() < deadline, "read {next} of {high} records");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            next = m.offset() + 1;
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_loses_nothing_across_kill_9_and_a_broker_restart() {
    let started = Instant::now();
    let mut broker = Broker::start().await.unwrap();
    broker.create_topic("sink_out", 1).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let sink = format!(
        "out FROM events WITH (connector = 'kafka', topic = 'sink_out', \
         properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    );
    let server = start_with_sink(data.path(), &sink).await;
    let server = rounds(data.path(), server, 6).await;
    let client = server.connect("dev").await.unwrap();
    let sinks = text_rows(&client, "SHOW SINKS").await.unwrap();
    assert!(
        sinks[0].starts_with("out|kafka|sink_out|at-least-once|running|"),
        "{sinks:?}"
    );
    // The broker goes away while rows come: the sink waits (SHOW SINKS says so) and loses
    // nothing once it is back.
    broker.stop().await.unwrap();
    insert_round(&client, ROUNDS).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sinks = text_rows(&client, "SHOW SINKS").await.unwrap();
        if sinks[0].contains("|retrying|") {
            assert!(sinks[0].contains("waiting"), "{sinks:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{sinks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.restart().await.unwrap();
    client.simple_query("FLUSH").await.unwrap();
    let records = read_topic(&broker.bootstrap(), "sink_out");
    let seen = counts(records.iter().map(|r| json_id(r)));
    let total = ((ROUNDS + 1) * STATEMENTS * ROWS) as u64;
    let (lost, duplicated) = lost_and_duplicated(&seen, total);
    eprintln!(
        "kafka sink (at-least-once): {} records, {lost} lost, {duplicated} duplicated, {} s",
        records.len(),
        started.elapsed().as_secs()
    );
    assert_eq!(lost, 0);
    assert_eq!(seen.len() as u64, total);
}
