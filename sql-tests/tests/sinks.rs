//! Sinks across kill -9: rows inserted in rounds, the server killed mid-way through each round
//! while its sink jobs write, restarted from its checkpoints; at the end every inserted row must
//! be in the sink's output. The filesystem sink is exactly-once (each row in exactly one
//! committed part file); the Kafka sink (Tansu broker) is at-least-once: no row lost, also while
//! the broker is down for a while, and the duplicates are counted and reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
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
    json_number(line, "id") as u64
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
    let records =
        rivulet_sql_tests::kafka::read_partition(&broker.bootstrap(), "sink_out", 0).unwrap();
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

/// The `"<name>":N` number of a JSON object.
fn json_number(text: &str, name: &str) -> i64 {
    let rest = text
        .split_once(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .1;
    rest.split([',', '}'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Produces round `round`'s events (ids `round * STATEMENTS * ROWS ..`, event time `id` ms) to
/// the source topic, in `STATEMENTS` flushed chunks.
fn produce_round(producer: &rivulet_sql_tests::kafka::TestProducer, round: usize) {
    for s in 0..STATEMENTS {
        let first = (round * STATEMENTS + s) * ROWS;
        let values: Vec<String> = (first..first + ROWS)
            .map(|i| format!("{{\"id\":{i},\"k\":{}}}", i % 17))
            .collect();
        producer.send_values("eo_in", 0, &values).unwrap();
    }
}

/// Exactly-once Kafka sinks (transactions, nisshi broker) from a Kafka source topic: a plain
/// sink of the rows, an upsert sink and a Debezium sink of an aggregate, and Flink's INSERT
/// INTO of a 1 s TUMBLE count (windows emitted on close), across four kill -9s under load and
/// a broker restart. The window sink names no guarantee: on a broker with transactions it is
/// exactly-once by default. Every committed record is checked, not only the final state: the plain
/// sink holds each id once; per key, the upsert sink's counts rise strictly (an epoch written
/// twice would repeat one) and end at the topic's count; each Debezium record's `before` is
/// the previous `after` of its key (a lost or repeated record breaks the chain); each window
/// is there once, with its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sinks_exactly_once_across_kill_9_and_a_broker_restart() {
    use rivulet_sql_tests::kafka::committed_records;
    let started = Instant::now();
    let mut broker = Broker::start_nisshi().await.unwrap();
    for topic in ["eo_in", "eo_rows", "eo_counts", "eo_changes", "eo_windows"] {
        broker.create_topic(topic, 1).await.unwrap();
    }
    let bootstrap = broker.bootstrap();
    let data = tempfile::tempdir().unwrap();
    let exactly_once = format!(
        "properties.bootstrap.server = '{bootstrap}', 'sink.delivery-guarantee' = 'exactly-once'"
    );
    let mut server = TestServer::start_in(data.path()).await.unwrap();
    {
        let client = server.connect("dev").await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE events (id BIGINT, k BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3), \
                   WATERMARK FOR ts AS ts) WITH ('connector' = 'kafka', 'topic' = 'eo_in', \
                   'properties.bootstrap.servers' = '{bootstrap}', \
                   'scan.startup.mode' = 'earliest-offset', 'format' = 'json'); \
                 CREATE SINK plain_rows AS SELECT id, k FROM events WITH (connector = 'kafka', \
                   topic = 'eo_rows', {exactly_once}) FORMAT PLAIN ENCODE JSON; \
                 CREATE SINK counts AS SELECT k, count(*) AS n FROM events GROUP BY k \
                   WITH (connector = 'kafka', topic = 'eo_counts', primary_key = 'k', \
                   {exactly_once}) FORMAT UPSERT ENCODE JSON; \
                 CREATE SINK changes AS SELECT k, count(*) AS n FROM events GROUP BY k \
                   WITH (connector = 'kafka', topic = 'eo_changes', primary_key = 'k', \
                   {exactly_once}) FORMAT DEBEZIUM ENCODE JSON; \
                 CREATE TABLE windows (k BIGINT, window_start TIMESTAMPTZ, n BIGINT) \
                   WITH ('connector' = 'kafka', 'topic' = 'eo_windows', 'format' = 'json', \
                   'properties.bootstrap.servers' = '{bootstrap}'); \
                 INSERT INTO windows SELECT k, window_start, count(*) FROM \
                   TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
                   GROUP BY k, window_start, window_end"
            ))
            .await
            .unwrap();
    }
    let producer = broker.producer().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for round in 0..ROUNDS {
        produce_round(&producer, round);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        server.kill9().await.unwrap();
        server = TestServer::start_in(data.path()).await.unwrap();
    }
    let client = server.connect("dev").await.unwrap();
    client.simple_query("FLUSH").await.unwrap();
    let sinks = text_rows(&client, "SHOW SINKS").await.unwrap();
    assert!(
        sinks.len() == 4 && sinks.iter().all(|s| s.contains("|exactly-once|running|")),
        "{sinks:?}"
    );
    // The broker goes away and comes back under the sinks: nothing lost, nothing twice. The
    // last round ends with an event far ahead, whose watermark closes every window before it.
    broker.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().await.unwrap();
    produce_round(&producer, ROUNDS);
    producer
        .send_values("eo_in", 0, &["{\"id\":1000000,\"k\":0}".to_string()])
        .unwrap();
    client.simple_query("FLUSH").await.unwrap();
    let total = ((ROUNDS + 1) * STATEMENTS * ROWS) as u64;

    let plain = committed_records(&bootstrap, "eo_rows", 0).unwrap();
    let values: Vec<String> = plain
        .records
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone().unwrap()).unwrap())
        .collect();
    let seen = counts(values.iter().map(|v| json_id(v)).filter(|id| *id < total));
    let (lost, duplicated) = lost_and_duplicated(&seen, total);
    eprintln!(
        "kafka sink (exactly-once, plain): {plain}, {lost} lost, {duplicated} duplicated, {} s",
        started.elapsed().as_secs()
    );
    assert_eq!((lost, duplicated, plain.open), (0, 0, 0));

    // The count per key of every event, the aggregate's final state.
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for id in 0..total {
        *expected.entry((id % 17) as i64).or_default() += 1;
    }
    // The last event's key.
    *expected.entry(0).or_default() += 1;

    let upserts = committed_records(&bootstrap, "eo_counts", 0).unwrap();
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for (key, value) in &upserts.records {
        let key = json_number(std::str::from_utf8(key.as_deref().unwrap()).unwrap(), "k");
        let value =
            String::from_utf8(value.clone().expect("no tombstones: counts only rise")).unwrap();
        let n = json_number(&value, "n");
        let previous = last.insert(key, n).unwrap_or(0);
        assert!(n > previous, "key {key}: count {n} after {previous}");
    }
    eprintln!("kafka sink (exactly-once, upsert): {upserts}");
    assert_eq!((last, upserts.open), (expected.clone(), 0));

    let changes = committed_records(&bootstrap, "eo_changes", 0).unwrap();
    let mut after: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, value) in &changes.records {
        let value = String::from_utf8(value.clone().unwrap()).unwrap();
        let (before, rest) = value.split_once(",\"after\":").unwrap();
        let now = json_number(rest, "n");
        let key = json_number(rest, "k");
        let was = after.insert(key, now);
        match was {
            None => assert!(before.contains("null"), "first change of {key}: {value}"),
            Some(was) => assert_eq!(json_number(before, "n"), was, "{value}"),
        }
    }
    eprintln!("kafka sink (exactly-once, debezium): {changes}");
    assert_eq!((after, changes.open), (expected, 0));

    // Every 1 s window of the events before the last one, once, with its count.
    let windows = committed_records(&bootstrap, "eo_windows", 0).unwrap();
    let mut got: BTreeMap<(i64, String), Vec<i64>> = BTreeMap::new();
    for (_, value) in &windows.records {
        let value = String::from_utf8(value.clone().unwrap()).unwrap();
        let start = value
            .split_once("\"window_start\":\"")
            .and_then(|(_, r)| r.split_once('"'))
            .unwrap()
            .0
            .to_string();
        got.entry((json_number(&value, "k"), start))
            .or_default()
            .push(json_number(&value, "n"));
    }
    let mut per_window: BTreeMap<(i64, u64), i64> = BTreeMap::new();
    for id in 0..total {
        *per_window.entry(((id % 17) as i64, id / 1000)).or_default() += 1;
    }
    eprintln!(
        "kafka sink (exactly-once, windows): {windows}, {} windows",
        got.len()
    );
    assert_eq!(windows.open, 0);
    assert_eq!(got.len(), per_window.len(), "windows: {got:?}");
    let mut expected_counts: Vec<i64> = per_window.values().copied().collect();
    let mut got_counts: Vec<i64> = got
        .values()
        .map(|n| {
            assert_eq!(n.len(), 1, "a window written {} times", n.len());
            n[0]
        })
        .collect();
    expected_counts.sort_unstable();
    got_counts.sort_unstable();
    assert_eq!(got_counts, expected_counts);
}

/// The exactly-once Kafka sink's crash windows, driven step by step against nisshi: a crash
/// after an epoch's checkpoint but before its commit (the next start commits the transaction
/// the checkpoint recorded, with the crashed producer's id), and a crash before a checkpoint
/// (the next start aborts the open transaction, and committing the recorded one again is
/// harmless once a later producer holds its id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_recovery_commits_the_checkpointed_transaction_and_aborts_the_rest() {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use rivulet_connectors::kafka::sink::{KafkaSink, KafkaSinkOptions};
    use rivulet_engine::changelog::ChangeBatch;
    use rivulet_engine::sink::Sink;
    use rivulet_engine::state::StateBatch;
    use rivulet_sql_tests::kafka::committed_records;

    let broker = Broker::start_nisshi().await.unwrap();
    broker.create_topic("eo_steps", 1).await.unwrap();
    let bootstrap = broker.bootstrap();
    let options_bootstrap = bootstrap.clone();
    let options: BTreeMap<String, String> = [
        ("connector", "kafka"),
        ("topic", "eo_steps"),
        ("properties.bootstrap.server", options_bootstrap.as_str()),
        ("format", "json"),
        ("sink.delivery-guarantee", "exactly-once"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let columns = vec!["id".to_string()];
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let rows = move |epoch: i64| {
        let ids: Vec<i64> = (0..10).map(|i| epoch * 100 + i).collect();
        ChangeBatch::inserts(
            RecordBatch::try_new(
                std::sync::Arc::clone(&schema),
                vec![std::sync::Arc::new(Int64Array::from(ids))],
            )
            .unwrap(),
        )
    };
    let open = move || {
        KafkaSink::new(
            7,
            "steps",
            KafkaSinkOptions::parse(&options).unwrap(),
            &columns,
        )
        .unwrap()
    };
    let committed_epochs = move || {
        let c = committed_records(&bootstrap, "eo_steps", 0).unwrap();
        let mut epochs: Vec<u64> = c
            .records
            .iter()
            .map(|(_, v)| json_id(std::str::from_utf8(v.as_deref().unwrap()).unwrap()) / 100)
            .collect();
        epochs.dedup();
        (epochs, c.records.len(), c.aborted, c.open)
    };
    tokio::task::spawn_blocking(move || {
        // Run 1: epoch 1 committed; epoch 2 checkpointed (what pre-commit returned is what the
        // checkpoint holds), then the process dies before the commit.
        let mut a = open();
        a.recover(0, None).unwrap();
        a.write(1, &rows(1)).unwrap();
        assert!(a.pre_commit(1, &mut StateBatch::new()).unwrap().is_some());
        a.commit(1).unwrap();
        a.write(2, &rows(2)).unwrap();
        let recorded = a.pre_commit(2, &mut StateBatch::new()).unwrap().unwrap();
        std::mem::forget(a);
        assert_eq!(committed_epochs(), (vec![1], 10, 0, 10));

        // Run 2 recovers epoch 2: its transaction is committed. Epoch 3 is written and
        // pre-committed, and the process dies before its checkpoint.
        let mut b = open();
        b.recover(2, Some(&recorded)).unwrap();
        assert_eq!(committed_epochs(), (vec![1, 2], 20, 0, 0));
        b.write(3, &rows(3)).unwrap();
        b.pre_commit(3, &mut StateBatch::new()).unwrap().unwrap();
        std::mem::forget(b);

        // Run 3 recovers epoch 2 again: committing it again changes nothing, epoch 3's
        // transaction is aborted, and epoch 3 written again is committed once.
        let mut c = open();
        c.recover(2, Some(&recorded)).unwrap();
        assert_eq!(committed_epochs(), (vec![1, 2], 20, 10, 0));
        c.write(3, &rows(3)).unwrap();
        c.pre_commit(3, &mut StateBatch::new()).unwrap();
        c.commit(3).unwrap();
        assert_eq!(committed_epochs(), (vec![1, 2, 3], 30, 10, 0));
        let stats = c.stats();
        assert_eq!((stats.committed_epoch, stats.transaction), (3, None));
    })
    .await
    .unwrap();
}
