//! Savepoints against the real binary: `ALTER ... SAVEPOINT TO` while rows flow, `CREATE ...
//! FROM SAVEPOINT` on the same server, on a backup of it (another data directory) and, for a
//! view over a Kafka topic, on a fresh server, each with another parallelism and each ending
//! equal to its query's batch answer; the refusals (a changed query, a table position another
//! server cannot have); a kill -9 during a savepoint; stop-with-savepoint and resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::kafka::Broker;
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};
use tokio_postgres::Client;

const AGG: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
const JOINED: &str =
    "SELECT t.k, count(*) AS n, sum(u.w) AS s FROM t JOIN u ON t.k = u.k GROUP BY t.k";

/// `n` random INSERT/UPDATE/DELETE statements on `t` and `u`.
async fn writes(c: &Client, rng: &mut StdRng, next_id: &mut i32, n: usize) {
    for _ in 0..n {
        let (table, col) = if rng.random_bool(0.7) {
            ("t", "v")
        } else {
            ("u", "w")
        };
        let sql = match rng.random_range(0..10) {
            0..7 => {
                *next_id += 1;
                format!(
                    "INSERT INTO {table} VALUES ({next_id}, {}, {})",
                    rng.random_range(0..12),
                    rng.random_range(-20..100)
                )
            }
            7..9 => format!(
                "UPDATE {table} SET {col} = {} WHERE id % 9 = {}",
                rng.random_range(-20..100),
                rng.random_range(0..9)
            ),
            _ => format!(
                "DELETE FROM {table} WHERE id = {}",
                rng.random_range(0..=*next_id)
            ),
        };
        c.batch_execute(&sql).await.unwrap();
    }
}

/// Asserts that view `view` holds its query's batch answer.
async fn equal(c: &Client, view: &str, query: &str, when: &str) {
    c.batch_execute("FLUSH").await.unwrap();
    let got = sorted_rows(c, &format!("SELECT * FROM {view}"))
        .await
        .unwrap();
    let want = sorted_rows(c, query).await.unwrap();
    assert!(!want.is_empty(), "{when}: {view}'s query answers nothing");
    assert_eq!(got, want, "{when}: {view} differs from its query");
}

fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} | {}", db.message(), db.detail().unwrap_or_default()),
        None => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_restores_here_and_on_a_backup_with_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let points = tempfile::tempdir().unwrap();
    let sp = |name: &str| points.path().join(name).display().to_string();
    let log = points.path().join("server.log");
    let server = TestServer::start_logging(dir.path(), &[], &log)
        .await
        .unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         CREATE TABLE u (id INT PRIMARY KEY, k INT, w INT);
         SET streaming_parallelism = 1;
         CREATE MATERIALIZED VIEW agg AS {AGG};
         CREATE MATERIALIZED VIEW joined AS {JOINED};"
    ))
    .await
    .unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    let mut next_id = 0;
    writes(&c, &mut rng, &mut next_id, 150).await;

    // Savepoints while a writer runs on.
    let writer = async {
        let w = server.connect("dev").await.unwrap();
        let mut rng = StdRng::seed_from_u64(22);
        let mut next = 10_000;
        writes(&w, &mut rng, &mut next, 150).await;
    };
    let save = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.batch_execute(&format!(
            "ALTER MATERIALIZED VIEW agg SAVEPOINT TO '{}'",
            sp("agg-1")
        ))
        .await
        .unwrap();
        c.batch_execute(&format!(
            "ALTER MATERIALIZED VIEW joined SAVEPOINT TO 'file://{}'",
            sp("joined-1")
        ))
        .await
        .unwrap();
    };
    tokio::join!(writer, save);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(points.path().join("agg-1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["definition"]["name"], "agg");
    assert_eq!(manifest["sources"][0]["relation"], "t");
    let saved_epoch = manifest["epoch"].as_u64().unwrap();
    assert!(saved_epoch > 0, "{manifest}");
    let listed = text_rows(&c, "SHOW SAVEPOINTS").await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[0].contains("agg") && listed[0].contains("t after"),
        "{listed:?}"
    );

    // More changes, and time for the change logs to be trimmed behind the running views: the
    // savepoints keep what they need.
    writes(&c, &mut rng, &mut next_id, 100).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Restored beside the originals with 4 instances: they continue from the savepoint and
    // take in everything since.
    c.batch_execute(&format!(
        "SET streaming_parallelism = 4;
         CREATE MATERIALIZED VIEW agg4 FROM SAVEPOINT '{}';
         CREATE MATERIALIZED VIEW joined4 WITH (savepoint = '{}') AS {JOINED};",
        sp("agg-1"),
        sp("joined-1")
    ))
    .await
    .unwrap();
    // The restored job started from the savepoint's epoch, not from nothing.
    let started = std::fs::read_to_string(&log).unwrap();
    let line = started
        .lines()
        .find(|l| l.contains("job started") && l.contains("job=\"agg4\""))
        .unwrap_or_else(|| panic!("no start of agg4 in the log:\n{started}"));
    assert!(line.contains(&format!(" epoch={saved_epoch} ")), "{line}");
    equal(&c, "agg4", AGG, "restored here").await;
    equal(&c, "joined4", JOINED, "restored here").await;
    let jobs = text_rows(
        &c,
        "SELECT job_name, parallelism FROM rivulet_jobs WHERE job_name = 'agg4'",
    )
    .await
    .unwrap();
    assert_eq!(jobs, vec!["agg4|4"]);

    // A query whose plan differs is refused, naming the difference.
    let e = c
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW bad WITH (savepoint = '{}') AS \
             SELECT k, max(v) AS n, sum(v) AS s FROM t GROUP BY k",
            sp("agg-1")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("55000"), "{e:?}");
    assert!(
        message(&e).contains("State table 1 of the savepoint"),
        "{}",
        message(&e)
    );
    let e = c
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW bad WITH (savepoint = '{}') AS \
             SELECT k, count(*) AS n, sum(w) AS s FROM u AS t GROUP BY k",
            sp("agg-1")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("55000"), "{e:?}");
    let e = c
        .batch_execute(&format!("CREATE SINK bad FROM SAVEPOINT '{}'", sp("agg-1")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("42809"), "{e:?}");
    let e = c
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW bad FROM SAVEPOINT '{}'",
            sp("nothing-here")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("58P01"), "{e:?}");
    let e = c
        .batch_execute(&format!(
            "ALTER MATERIALIZED VIEW agg SAVEPOINT TO '{}'",
            sp("agg-1")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("58P02"), "{e:?}");
    let e = c
        .batch_execute("ALTER MATERIALIZED VIEW agg SAVEPOINT TO 'relative'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("22023"), "{e:?}");
    let e = c
        .batch_execute("ALTER MATERIALIZED VIEW t SAVEPOINT TO '/x'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("42809"), "{e:?}");

    // A sink's job saves and restores the same way (its connector's options come along).
    c.batch_execute(&format!(
        "CREATE SINK per_k AS {AGG} WITH (connector = 'blackhole');
         ALTER SINK per_k SAVEPOINT TO '{}';
         CREATE SINK per_k2 FROM SAVEPOINT '{}';",
        sp("sink-1"),
        sp("sink-1")
    ))
    .await
    .unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    let sinks = text_rows(
        &c,
        "SELECT job_name, kind, status FROM rivulet_jobs WHERE job_name LIKE 'per_k%' ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(sinks, vec!["per_k|sink|running", "per_k2|sink|running"]);
    let e = c
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW bad FROM SAVEPOINT '{}'",
            sp("sink-1")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("42809"), "{e:?}");
    c.batch_execute(&format!(
        "DROP SINK per_k; DROP SINK per_k2; DROP SAVEPOINT '{}'",
        sp("sink-1")
    ))
    .await
    .unwrap();

    // A backup of this server is another data directory with the savepoints' change-log
    // entries; the server dies right after.
    writes(&c, &mut rng, &mut next_id, 50).await;
    let backup = points.path().join("backup");
    c.batch_execute(&format!("BACKUP TO '{}'", backup.display()))
        .await
        .unwrap();
    server.kill9().await.unwrap();

    let restored = TestServer::start_in(&backup).await.unwrap();
    let c = restored.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "SET streaming_parallelism = 3;
         CREATE MATERIALIZED VIEW agg3 FROM SAVEPOINT '{}';
         CREATE MATERIALIZED VIEW joined3 FROM SAVEPOINT '{}';",
        sp("agg-1"),
        sp("joined-1")
    ))
    .await
    .unwrap();
    equal(&c, "agg3", AGG, "restored on the backup").await;
    equal(&c, "joined3", JOINED, "restored on the backup").await;
    writes(&c, &mut rng, &mut next_id, 80).await;
    for (view, query) in [
        ("agg3", AGG),
        ("joined3", JOINED),
        ("agg4", AGG),
        ("agg", AGG),
    ] {
        equal(&c, view, query, "after more changes on the backup").await;
    }

    // Dropping the savepoints lets the logs go; a restore then says why it cannot.
    c.batch_execute(&format!(
        "DROP SAVEPOINT '{}'; DROP SAVEPOINT '{}'",
        sp("agg-1"),
        sp("joined-1")
    ))
    .await
    .unwrap();
    assert!(text_rows(&c, "SHOW SAVEPOINTS").await.unwrap().is_empty());
    let e = c
        .batch_execute(&format!("DROP SAVEPOINT '{}'", sp("agg-1")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("42704"), "{e:?}");
    c.batch_execute(&format!("DROP SAVEPOINT IF EXISTS '{}'", sp("agg-1")))
        .await
        .unwrap();
    writes(&c, &mut rng, &mut next_id, 20).await;
    c.batch_execute("FLUSH").await.unwrap();
    // The trim runs every 2 s (and skips a turn while a job starts).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let e = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match c
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW late FROM SAVEPOINT '{}'",
                sp("agg-1")
            ))
            .await
        {
            Err(e) => break e,
            Ok(()) => {
                c.batch_execute("DROP MATERIALIZED VIEW late")
                    .await
                    .unwrap();
                assert!(
                    std::time::Instant::now() < deadline,
                    "the log was never trimmed"
                );
            }
        }
    };
    assert_eq!(code(&e), Some("55000"), "{e:?}");
    assert!(message(&e).contains("no longer holds"), "{}", message(&e));
    restored.kill9().await.unwrap();
}

/// Writes `n` JSON events `from..from + n` to the topic's two partitions.
fn produce(broker: &Broker, from: usize, n: usize) {
    let producer = broker.producer().unwrap();
    for p in 0..2 {
        let values: Vec<String> = (from..from + n)
            .filter(|i| i % 2 == p)
            .map(|i| {
                format!(
                    "{{\"id\": {i}, \"k\": {}, \"v\": {}}}",
                    i % 7,
                    (i * 13) % 50
                )
            })
            .collect();
        producer.send_values("events", p as i32, &values).unwrap();
    }
    producer.flush().unwrap();
}

const PER_K: &str = "SELECT k, count(*) AS n, sum(v) AS s, sum(id) AS ids FROM events GROUP BY k";

/// `PER_K`'s answer over events `0..n`, as `sorted_rows` gives it.
fn per_k(n: usize) -> Vec<String> {
    let mut groups = std::collections::BTreeMap::<usize, (usize, usize, usize)>::new();
    for i in 0..n {
        let g = groups.entry(i % 7).or_default();
        g.0 += 1;
        g.1 += (i * 13) % 50;
        g.2 += i;
    }
    let mut rows: Vec<String> = groups
        .into_iter()
        .map(|(k, (n, s, ids))| format!("{k}|{n}|{s}|{ids}"))
        .collect();
    rows.sort();
    rows
}

fn source_ddl(bootstrap: &str, startup: &str) -> String {
    format!(
        "CREATE SOURCE events (id BIGINT, k INT, v BIGINT) \
         WITH (connector = 'kafka', topic = 'events', \
               properties.bootstrap.server = '{bootstrap}', scan.startup.mode = '{startup}') \
         FORMAT PLAIN ENCODE JSON;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_kafka_restores_on_a_fresh_server_and_a_table_position_does_not() {
    let mut broker = Broker::start().await.unwrap();
    broker.create_topic("events", 2).await.unwrap();
    let bootstrap = broker.bootstrap();
    let points = tempfile::tempdir().unwrap();
    let sp = |name: &str| points.path().join(name).display().to_string();
    produce(&broker, 0, 3000);

    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "{} CREATE MATERIALIZED VIEW per_k AS {PER_K};
         CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         INSERT INTO t VALUES (1, 1, 1), (2, 2, 2);
         CREATE MATERIALIZED VIEW agg AS {AGG};",
        source_ddl(&bootstrap, "earliest")
    ))
    .await
    .unwrap();
    equal(&c, "per_k", PER_K, "before the savepoint").await;
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM per_k").await.unwrap(),
        per_k(3000)
    );
    c.batch_execute(&format!(
        "ALTER MATERIALIZED VIEW per_k SAVEPOINT TO '{}';
         ALTER MATERIALIZED VIEW agg SAVEPOINT TO '{}';",
        sp("per_k"),
        sp("agg")
    ))
    .await
    .unwrap();
    produce(&broker, 3000, 2000);
    server.kill9().await.unwrap();

    // A fresh server that knows the same topic, defined to start at its end: a new view there
    // would see none of the records so far, so whatever the restored one holds of them comes
    // from the savepoint (its state and its offsets).
    let fresh = TestServer::start().await.unwrap();
    let c = fresh.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "{} CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         INSERT INTO t VALUES (1, 1, 1), (2, 2, 2);
         SET streaming_parallelism = 3;
         CREATE MATERIALIZED VIEW per_k FROM SAVEPOINT '{}';
         CREATE MATERIALIZED VIEW fresh_k AS {PER_K};
         FLUSH;",
        source_ddl(&bootstrap, "latest"),
        sp("per_k")
    ))
    .await
    .unwrap();
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM per_k").await.unwrap(),
        per_k(5000),
        "restored on a fresh server"
    );
    produce(&broker, 5000, 1000);
    c.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM per_k").await.unwrap(),
        per_k(6000),
        "after more records"
    );
    let fresh_total = text_rows(&c, "SELECT sum(n) FROM fresh_k").await.unwrap();
    assert_eq!(fresh_total, vec!["1000"], "a new view starts at the end");

    // A table's change-log position means nothing on another server: refused, saying why.
    let e = c
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW agg FROM SAVEPOINT '{}'",
            sp("agg")
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("55000"), "{e:?}");
    assert!(message(&e).contains("another table"), "{}", message(&e));
    fresh.kill9().await.unwrap();
    broker.stop().await.unwrap();
}

/// Whether a savepoint's temporary directory is left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_savepoint_leaves_the_earlier_one_whole_and_suspend_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let points = tempfile::tempdir().unwrap();
    let sp = |name: &str| points.path().join(name).display().to_string();
    const BIG: &str = "SELECT id, count(*) AS n, sum(v) AS s FROM t GROUP BY id";
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         INSERT INTO t SELECT i, i % 11, i % 97 FROM generate_series(1, 60000) AS g(i);
         CREATE MATERIALIZED VIEW big AS {BIG};"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "ALTER MATERIALIZED VIEW big SAVEPOINT TO '{}'",
        sp("big-1")
    ))
    .await
    .unwrap();
    c.batch_execute("INSERT INTO t SELECT i, i % 11, 1 FROM generate_series(60001, 61000) AS g(i)")
        .await
        .unwrap();
    // Kill the server while later savepoints are being written, at several moments.
    let mut torn = Vec::new();
    for (round, delay) in [5u64, 40, 120].into_iter().enumerate() {
        let c = server.connect("dev").await.unwrap();
        let sql = format!(
            "ALTER MATERIALIZED VIEW big SAVEPOINT TO '{}'",
            sp(&format!("big-{}", round + 2))
        );
        let kill = async {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            server.kill9().await.unwrap();
        };
        let (_cut_short, ()) = tokio::join!(c.batch_execute(&sql), kill);
        torn = leftovers(points.path());
        server = TestServer::start_in(dir.path()).await.unwrap();
    }
    eprintln!("savepoints cut short by kill -9: {torn:?}");
    let c = server.connect("dev").await.unwrap();
    // Whatever a cut-short savepoint left is no savepoint; the first one restores whole, and
    // any later one that got written does too.
    for round in 2..5 {
        let at = points.path().join(format!("big-{round}"));
        if at.exists() {
            c.batch_execute(&format!(
                "CREATE MATERIALIZED VIEW big_{round} FROM SAVEPOINT '{}'",
                at.display()
            ))
            .await
            .unwrap();
            equal(&c, &format!("big_{round}"), BIG, "a later savepoint").await;
        }
    }
    c.batch_execute(&format!(
        "SET streaming_parallelism = 2; CREATE MATERIALIZED VIEW big_1 FROM SAVEPOINT '{}'",
        sp("big-1")
    ))
    .await
    .unwrap();
    equal(&c, "big_1", BIG, "the first savepoint after the kills").await;

    // Stop-with-savepoint: the view stays, unchanging, across a restart, until resumed.
    c.batch_execute(&format!(
        "ALTER MATERIALIZED VIEW big SUSPEND WITH SAVEPOINT TO '{}'",
        sp("big-suspended")
    ))
    .await
    .unwrap();
    let status = text_rows(&c, "SELECT status FROM rivulet_jobs WHERE job_name = 'big'")
        .await
        .unwrap();
    assert_eq!(status, vec!["suspended"]);
    let before = sorted_rows(&c, "SELECT * FROM big").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (-1, 0, 7); FLUSH")
        .await
        .unwrap();
    assert_eq!(sorted_rows(&c, "SELECT * FROM big").await.unwrap(), before);
    let e = c
        .batch_execute(&format!("DROP SAVEPOINT '{}'", sp("big-suspended")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("55006"), "{e:?}");
    server.kill9().await.unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (-2, 0, 8); FLUSH")
        .await
        .unwrap();
    assert_eq!(sorted_rows(&c, "SELECT * FROM big").await.unwrap(), before);
    let status = text_rows(&c, "SELECT status FROM rivulet_jobs WHERE job_name = 'big'")
        .await
        .unwrap();
    assert_eq!(status, vec!["suspended"]);
    c.batch_execute("ALTER MATERIALIZED VIEW big RESUME")
        .await
        .unwrap();
    equal(&c, "big", BIG, "resumed").await;
    let e = c
        .batch_execute("ALTER MATERIALIZED VIEW big RESUME")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("55000"), "{e:?}");

    // An upgrade: stop with a savepoint, drop, and create again from it with a changed query
    // (a filter: the same stateful operators and columns).
    const UPGRADED: &str = "SELECT id, count(*) AS n, sum(v) AS s FROM t WHERE v >= 0 GROUP BY id";
    c.batch_execute(&format!(
        "ALTER MATERIALIZED VIEW big SUSPEND WITH SAVEPOINT '{}';
         INSERT INTO t VALUES (-3, 0, 9);
         DROP MATERIALIZED VIEW big;
         CREATE MATERIALIZED VIEW big WITH (savepoint = '{}') AS {UPGRADED};",
        sp("big-upgrade"),
        sp("big-upgrade")
    ))
    .await
    .unwrap();
    equal(&c, "big", UPGRADED, "upgraded").await;
    server.kill9().await.unwrap();
}
