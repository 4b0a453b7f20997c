//! Operations against the real binary: live rescaling (`ALTER MATERIALIZED VIEW ... SET
//! PARALLELISM`) while rows flow, with a kill -9 between rescales, each view equal to its query's
//! batch answer; and a graceful shutdown on SIGTERM under load: the server exits within its bound,
//! every job stopped at a checkpoint, and the restarted jobs resume exactly there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};
use tokio_postgres::Client;

const SETUP: &str = "CREATE TABLE a (id INT PRIMARY KEY, k INT, v INT);
    CREATE TABLE b (id INT PRIMARY KEY, k INT, w INT);";

/// The views that are rescaled: an aggregate, a join feeding an aggregate, a top-N per key.
const RESCALED: &[(&str, &str)] = &[
    (
        "per_k",
        "SELECT k, count(*) AS n, sum(v) AS s FROM a GROUP BY k",
    ),
    (
        "joined",
        "SELECT a.k, count(*) AS n, sum(b.w) AS s FROM a JOIN b ON a.k = b.k GROUP BY a.k",
    ),
    (
        "top2",
        "SELECT k, id, v FROM (SELECT k, id, v, row_number() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM a) WHERE rn <= 2",
    ),
];

/// A view that is not rescaled: its job must run on, its epochs advancing, while others rescale.
const OTHER: (&str, &str) = (
    "other",
    "SELECT k, max(w) AS m, count(*) AS n FROM b GROUP BY k",
);

/// `n` random INSERT/UPDATE/DELETE statements on `a` and `b`.
async fn writes(c: &Client, rng: &mut StdRng, next_id: &mut i32, n: usize) {
    for _ in 0..n {
        let table = if rng.random_bool(0.6) { "a" } else { "b" };
        let sql = match rng.random_range(0..10) {
            0..6 => {
                *next_id += 1;
                format!(
                    "INSERT INTO {table} VALUES ({}, {}, {})",
                    next_id,
                    rng.random_range(0..15),
                    rng.random_range(-50..100)
                )
            }
            6..8 => format!(
                "UPDATE {table} SET v_or_w = {} WHERE id % 7 = {}",
                rng.random_range(-50..100),
                rng.random_range(0..7)
            )
            .replace("v_or_w", if table == "a" { "v" } else { "w" }),
            _ => format!(
                "DELETE FROM {table} WHERE id = {}",
                rng.random_range(0..=*next_id)
            ),
        };
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn compare(c: &Client, when: &str) {
    c.batch_execute("FLUSH").await.unwrap();
    let mut rows = 0;
    for (name, query) in RESCALED.iter().chain([&OTHER]) {
        let view = sorted_rows(c, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let oracle = sorted_rows(c, query).await.unwrap();
        assert_eq!(view, oracle, "{when}: view {name} differs from its query");
        rows += view.len();
    }
    assert!(rows > 20, "{when}: the views are nearly empty");
}

/// Each job's (parallelism, epoch, restarts, uptime in ms), by name.
async fn jobs(c: &Client) -> std::collections::BTreeMap<String, (i64, i64, i64, i64)> {
    text_rows(
        c,
        "SELECT job_name, parallelism, epoch, restarts, uptime_ms FROM rivulet_jobs",
    )
    .await
    .unwrap()
    .into_iter()
    .map(|line| {
        let f: Vec<&str> = line.split('|').collect();
        let n = |i: usize| f[i].parse::<i64>().unwrap();
        (f[0].to_string(), (n(1), n(2), n(3), n(4)))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rescale_while_rows_flow_keeps_every_view_equal_to_its_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    c.batch_execute(SETUP).await.unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    let mut next_id = 0;
    writes(&c, &mut rng, &mut next_id, 100).await;
    c.batch_execute("SET streaming_parallelism = 1")
        .await
        .unwrap();
    for (name, query) in RESCALED.iter().chain([&OTHER]) {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    assert!(jobs(&c).await.values().all(|j| j.0 == 1));
    for (step, p) in [4i64, 2].into_iter().enumerate() {
        let w = server.connect("dev").await.unwrap();
        let f = server.connect("dev").await.unwrap();
        let before = jobs(&c).await[OTHER.0];
        let started = std::time::Instant::now();
        let writer = writes(&w, &mut rng, &mut next_id, 150);
        let rescaled = std::sync::atomic::AtomicBool::new(false);
        let rescale = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (name, _) in RESCALED {
                c.batch_execute(&format!(
                    "ALTER MATERIALIZED VIEW {name} SET PARALLELISM = {p}"
                ))
                .await
                .unwrap();
            }
            rescaled.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        // FLUSH waits through a rescale: for the new job once the old one stopped.
        let flushes = async {
            for _ in 0..500 {
                f.batch_execute("FLUSH").await.unwrap();
                if rescaled.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
        };
        tokio::join!(writer, rescale, flushes);
        let after = jobs(&c).await[OTHER.0];
        // The other job ran on through the rescales: not restarted (its uptime grew by the
        // time that passed), its epochs advancing.
        let elapsed = started.elapsed().as_millis() as i64;
        assert!(
            after.1 > before.1,
            "other job's epochs: {before:?} then {after:?}"
        );
        assert_eq!((after.2, after.0), (before.2, before.0));
        assert!(
            after.3 - before.3 >= elapsed - 50,
            "other job restarted: {before:?} then {after:?} in {elapsed} ms"
        );
        let now = jobs(&c).await;
        for (name, _) in RESCALED {
            assert_eq!(now[*name].0, p, "{name}: {now:?}");
        }
        compare(&c, &format!("after the rescale to {p}")).await;
        // The join's instances read their state tables: the share from memory is reported. The
        // random writes may all have been processed before the rescale, so rows on every key of
        // both sides follow it: each new instance probes its tables.
        let mut fresh = String::new();
        for k in 0..15 {
            for table in ["a", "b"] {
                next_id += 1;
                fresh.push_str(&format!("INSERT INTO {table} VALUES ({next_id}, {k}, 1);"));
            }
        }
        c.batch_execute(&fresh).await.unwrap();
        c.batch_execute("FLUSH").await.unwrap();
        let rates = text_rows(
            &c,
            "SELECT state_cache_hit_rate FROM rivulet_operators \
             WHERE job_name = 'joined' AND operator = 'HashJoin'",
        )
        .await
        .unwrap();
        assert_eq!(rates.len() as i64, p, "{rates:?}");
        assert!(
            rates
                .iter()
                .filter_map(|r| r.parse::<f64>().ok())
                .any(|r| (0.0..=1.0).contains(&r)),
            "{rates:?}"
        );
        if step == 0 {
            // Rows arrive, the server dies; the new parallelism was stored with each view.
            writes(&c, &mut rng, &mut next_id, 60).await;
            server.kill9().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            c = server.connect("dev").await.unwrap();
            compare(&c, "after kill -9").await;
            let now = jobs(&c).await;
            for (name, _) in RESCALED {
                assert_eq!(now[*name].0, p, "{name} after restart: {now:?}");
            }
        }
    }
    // Errors say what is wrong.
    for (sql, state) in [
        ("ALTER MATERIALIZED VIEW a SET PARALLELISM = 2", "42809"),
        ("ALTER MATERIALIZED VIEW nope SET PARALLELISM = 2", "42P01"),
        (
            "ALTER MATERIALIZED VIEW per_k SET PARALLELISM = 300",
            "22023",
        ),
        ("ALTER SINK per_k SET PARALLELISM = 2", "42809"),
        (
            "ALTER MATERIALIZED VIEW per_k SET PARALLELISM = lots",
            "42601",
        ),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some(state), "{sql}: {e:?}");
    }
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .batch_execute("ALTER MATERIALIZED VIEW per_k SET PARALLELISM = 1")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25001"));
    c.batch_execute("ROLLBACK").await.unwrap();
    // Two rescales of one view at once run one after the other: never two jobs of one view.
    let other = server.connect("dev").await.unwrap();
    let (a, b) = tokio::join!(
        c.batch_execute("ALTER MATERIALIZED VIEW joined SET PARALLELISM = 3"),
        other.batch_execute("ALTER MATERIALIZED VIEW joined SET PARALLELISM = 1"),
    );
    a.unwrap();
    b.unwrap();
    writes(&c, &mut rng, &mut next_id, 40).await;
    compare(&c, "after two rescales at once").await;
    // ADAPTIVE follows the cores; DEFAULT goes back to the server's setting.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    c.batch_execute("ALTER MATERIALIZED VIEW per_k SET PARALLELISM = ADAPTIVE")
        .await
        .unwrap();
    assert_eq!(jobs(&c).await["per_k"].0, cores);
    compare(&c, "adaptive").await;
    server.kill9().await.unwrap();
}

/// The fields of the last log line with `message` about job `job`, after byte `from`.
fn logged(log: &str, from: usize, message: &str, job: &str) -> Option<(String, String)> {
    let line = log[from..]
        .lines()
        .rev()
        .find(|l| l.contains(message) && l.contains(&format!("job=\"{job}\"")))?;
    let field = |name: &str| {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[at..];
        let end = if rest.starts_with('[') {
            rest.find(']')? + 1
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        Some(rest[..end].to_string())
    };
    Some((field("epoch")?, field("positions")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stops_every_job_at_a_checkpoint_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server.log");
    let flags = ["--shutdown-timeout-ms", "10000"];
    let server = TestServer::start_logging(dir.path(), &flags, &log_path)
        .await
        .unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         SET streaming_parallelism = 2;
         CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
         CREATE MATERIALIZED VIEW top AS SELECT * FROM (SELECT k, id, row_number() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM t) WHERE rn <= 3;",
    )
    .await
    .unwrap();
    // Load: 100-row inserts back to back until the server goes; what was acknowledged must all
    // be there afterwards.
    let mut acked = 0i32;
    let load = async {
        for batch in 0..2_000i32 {
            let values: Vec<String> = (0..100)
                .map(|i| {
                    let id = batch * 100 + i;
                    format!("({id}, {}, {})", id % 23, (id * 7919) % 1000)
                })
                .collect();
            let sql = format!("INSERT INTO t VALUES {}", values.join(","));
            if c.batch_execute(&sql).await.is_err() {
                break;
            }
            acked += 100;
        }
    };
    let stop = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.terminate().await.unwrap()
    };
    let ((), (status, took)) = tokio::join!(load, stop);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    assert!(acked >= 100, "the load did not run");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let stopped_at = log.len();
    let stops: Vec<(String, String)> = ["agg", "top"]
        .iter()
        .map(|job| {
            logged(&log, 0, "job stopped at a checkpoint", job)
                .unwrap_or_else(|| panic!("no checkpoint at shutdown for {job}:\n{log}"))
        })
        .collect();

    let server = TestServer::start_logging(dir.path(), &flags, &log_path)
        .await
        .unwrap();
    let c = server.connect("dev").await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (job, stop) in ["agg", "top"].iter().zip(&stops) {
        // The restarted job starts at the epoch and source positions the stopped one ended
        // with: nothing it committed is read again.
        let start = logged(&log, stopped_at, "job started", job)
            .unwrap_or_else(|| panic!("no start of {job} after the restart:\n{log}"));
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(job)).collect();
        assert_eq!(
            &start,
            stop,
            "{job}: (epoch, positions) at stop and at start:\n{}",
            lines.join("\n")
        );
    }
    c.batch_execute("FLUSH").await.unwrap();
    let rows: i64 = text_rows(&c, "SELECT count(*) FROM t").await.unwrap()[0]
        .parse()
        .unwrap();
    // An insert may have committed with its acknowledgement lost in the shutdown.
    assert!(
        rows == i64::from(acked) || rows == i64::from(acked) + 100,
        "{rows} rows, {acked} acknowledged"
    );
    for (view, query) in [
        (
            "agg",
            "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
        ),
        (
            "top",
            "SELECT * FROM (SELECT k, id, row_number() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM t) WHERE rn <= 3",
        ),
    ] {
        let got = sorted_rows(&c, &format!("SELECT * FROM {view}"))
            .await
            .unwrap();
        let want = sorted_rows(&c, query).await.unwrap();
        assert_eq!(got, want, "{view} after the restart");
    }
    let (status, _) = server.terminate().await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_then_kill_9_restores_whole_commits_on_another_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("nested").join("backup-1");
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         SET streaming_parallelism = 2;
         CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;",
    )
    .await
    .unwrap();
    let acked = std::sync::atomic::AtomicI32::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        for batch in 0..400i32 {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let values: Vec<String> = (0..100)
                .map(|i| {
                    let id = batch * 100 + i;
                    format!("({id}, {}, {})", id % 17, id % 101)
                })
                .collect();
            c.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(",")))
                .await
                .unwrap();
            acked.fetch_add(100, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let backup = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = acked.load(std::sync::atomic::Ordering::Relaxed);
        let out = tokio::process::Command::new(rivulet_sql_tests::rivulet_bin())
            .args(["backup", "--listen", &format!("127.0.0.1:{}", server.port)])
            .arg("--to")
            .arg(&target)
            .output()
            .await
            .unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (before, out)
    };
    let ((), (before, out)) = tokio::join!(load, backup);
    assert!(
        out.status.success(),
        "rivulet backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(before >= 100, "the load did not run before the backup");
    // The server dies right after; the backup is a data dir of its own.
    server.kill9().await.unwrap();
    let restored = TestServer::start_in(&target).await.unwrap();
    let c = restored.connect("dev").await.unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    let stats = text_rows(&c, "SELECT count(*), min(id), max(id) FROM t")
        .await
        .unwrap();
    let f: Vec<i64> = stats[0].split('|').map(|x| x.parse().unwrap()).collect();
    // Whole commits, in order: every insert acknowledged before the backup began, none torn.
    assert!(
        f[0] >= i64::from(before),
        "{f:?} rows, {before} acknowledged before"
    );
    assert_eq!((f[0] % 100, f[1], f[2]), (0, 0, f[0] - 1), "{f:?}");
    let got = sorted_rows(&c, "SELECT * FROM agg").await.unwrap();
    let want = sorted_rows(&c, "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k")
        .await
        .unwrap();
    assert_eq!(got, want);
    // The restored server goes on: a new row reaches the view.
    c.batch_execute("INSERT INTO t VALUES (-1, 0, 5); FLUSH")
        .await
        .unwrap();
    let got = sorted_rows(&c, "SELECT * FROM agg").await.unwrap();
    let want = sorted_rows(&c, "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k")
        .await
        .unwrap();
    assert_eq!(got, want);
    // A second backup to the same place is refused, saying why.
    let e = c
        .batch_execute(&format!("BACKUP TO '{}'", target.display()))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("58P02"));
    let e = c.batch_execute("BACKUP TO 'relative'").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22023"));
    restored.kill9().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescale_during_a_create_backfill_keeps_the_view() {
    let server = TestServer::start_with_flags(&["--backfill-chunk-rows", "64"])
        .await
        .unwrap();
    let c = server.connect("dev").await.unwrap();
    let other = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v INT);
         INSERT INTO t SELECT x, x % 97, x % 13 FROM generate_series(1, 60000) AS g(x);
         SET streaming_parallelism = 1;",
    )
    .await
    .unwrap();
    let create = c.batch_execute(
        "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
    );
    let alter = async {
        // Once the view's job runs its backfill, another session rescales it.
        for _ in 0..500 {
            let listed = text_rows(
                &other,
                "SELECT count(*) FROM rivulet_jobs WHERE job_name = 'per_k'",
            )
            .await
            .unwrap();
            if listed == ["1"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        other
            .batch_execute("ALTER MATERIALIZED VIEW per_k SET PARALLELISM = 2")
            .await
    };
    let (created, altered) = tokio::join!(create, alter);
    created.unwrap();
    altered.unwrap();
    assert_eq!(jobs(&c).await["per_k"].0, 2);
    let got = sorted_rows(&c, "SELECT * FROM per_k").await.unwrap();
    let want = sorted_rows(&c, "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k")
        .await
        .unwrap();
    assert_eq!(got, want);
}
