//! RisingWave's subscriptions against the real binary: `CREATE SUBSCRIPTION`, subscription
//! cursors and `FETCH` in both protocols (tokio-postgres' `query` is the extended protocol, with
//! a Describe before the rows), a FETCH that waits for the next commit, retention kept and
//! expired by the change-log trimmer, a subscription that survives kill -9, and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rivulet_sql_tests::{TestServer, text_rows};
use tokio_postgres::Client;

/// The compat venv's Python, with psycopg (`scripts/deps-compat`).
fn compat_python() -> Option<std::path::PathBuf> {
    let dir = std::env::var("RIVULET_COMPAT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/rivulet-compat")
        });
    let python = dir.join("venv/bin/python");
    python.exists().then_some(python)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `FETCH` through the extended protocol: each row as `id|v|op`, and the commit times.
async fn fetch(c: &Client, sql: &str) -> (Vec<String>, Vec<Option<i64>>) {
    let rows = c.query(sql, &[]).await.unwrap();
    let mut lines = Vec::new();
    let mut times = Vec::new();
    for row in rows {
        let id: Option<i32> = row.get(0);
        let v: Option<i32> = row.get(1);
        let op: String = row.get(2);
        lines.push(format!(
            "{}|{}|{op}",
            id.map_or("NULL".into(), |x| x.to_string()),
            v.map_or("NULL".into(), |x| x.to_string())
        ));
        times.push(row.get(3));
    }
    (lines, times)
}

async fn error_code(c: &Client, sql: &str) -> String {
    let e = c.batch_execute(sql).await.unwrap_err();
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_cursors_fetch_changes_in_both_protocols_and_keep_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT);
         INSERT INTO t VALUES (1, 10), (2, 20);
         CREATE MATERIALIZED VIEW mv AS SELECT v % 20 AS id, count(*)::int AS v FROM t GROUP BY v % 20;
         CREATE SUBSCRIPTION s FROM t WITH (retention = '1D');
         CREATE SUBSCRIPTION sv FROM mv;
         DECLARE c SUBSCRIPTION CURSOR FOR s;
         DECLARE full_t SUBSCRIPTION CURSOR FOR s FULL;
         DECLARE full_v SUBSCRIPTION CURSOR FOR sv FULL;",
    )
    .await
    .unwrap();
    // Nothing was committed after DECLARE: an empty result at once.
    assert_eq!(fetch(&c, "FETCH NEXT FROM c").await.0, Vec::<String>::new());
    let before = unix_ms();
    c.batch_execute(
        "INSERT INTO t VALUES (3, 30);
         UPDATE t SET v = 11 WHERE id = 1;
         DELETE FROM t WHERE id = 2;
         FLUSH;",
    )
    .await
    .unwrap();
    let after = unix_ms();
    let changes = vec![
        "3|30|Insert",
        "1|10|UpdateDelete",
        "1|11|UpdateInsert",
        "2|20|Delete",
    ];
    // Two rows at a time: a FETCH resumes where the last one stopped, mid-commit too.
    let (first, times_1) = fetch(&c, "FETCH 2 FROM c").await;
    let (second, times_2) = fetch(&c, "FETCH 2 FROM c").await;
    assert_eq!([first, second].concat(), changes);
    let times: Vec<i64> = [times_1, times_2].concat().into_iter().flatten().collect();
    assert_eq!(times.len(), 4, "every change has its commit time");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.iter().all(|t| (before..=after).contains(t)),
        "{times:?}"
    );
    assert_eq!(fetch(&c, "FETCH 10 FROM c").await.0, Vec::<String>::new());
    // FULL: the rows as of DECLARE, then the same changes; the simple protocol gives the same.
    let simple = text_rows(&c, "FETCH 100 FROM full_t").await.unwrap();
    let simple: Vec<String> = simple
        .iter()
        .map(|l| l.rsplit_once('|').unwrap().0.to_string())
        .collect();
    assert_eq!(
        simple,
        [vec!["1|10|Insert", "2|20|Insert"], changes.clone()].concat()
    );
    // A view's changes: one net change per group and commit.
    let (view, _) = fetch(&c, "FETCH 100 FROM full_v").await;
    let mut snapshot = view[..2].to_vec();
    snapshot.sort();
    assert_eq!(snapshot, ["0|1|Insert", "10|1|Insert"]);
    let mut rest = view[2..].to_vec();
    rest.sort();
    assert_eq!(rest, ["0|1|Delete", "11|1|Insert"]);

    // psycopg's `execute` (the extended protocol, as drivers use it) reads a cursor too.
    match compat_python() {
        Some(python) => {
            let script = "import json, sys, psycopg\n\
                conn = psycopg.connect(f'host=127.0.0.1 port={sys.argv[1]} user=root dbname=dev', \
                autocommit=True)\n\
                cur = conn.cursor()\n\
                cur.execute('DECLARE pc SUBSCRIPTION CURSOR FOR s FULL')\n\
                cur.execute('FETCH 100 FROM pc')\n\
                print(json.dumps([[r[0], r[1], r[2], r[3] is not None] for r in cur.fetchall()]))\n";
            let out = tokio::process::Command::new(python)
                .args(["-c", script, &server.port.to_string()])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                rows,
                serde_json::json!([[1, 11, "Insert", true], [3, 30, "Insert", true]])
            );
        }
        None => eprintln!("the compat venv is missing; scripts/deps-compat installs it"),
    }

    // A FETCH with a timeout waits for the next commit.
    let writer = server.connect("dev").await.unwrap();
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer
            .batch_execute("INSERT INTO t VALUES (4, 40)")
            .await
            .unwrap();
    };
    let started = Instant::now();
    let ((waited, _), ()) = tokio::join!(fetch(&c, "FETCH 5 FROM c WITH (timeout = '10s')"), write);
    assert_eq!(waited, ["4|40|Insert"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Without a commit, it returns empty when the timeout passes.
    let started = Instant::now();
    assert!(
        fetch(&c, "FETCH 5 FROM c WITH (timeout = '300ms')")
            .await
            .0
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Retention: a table nobody else reads keeps the changes of its subscription's retention,
    // and drops older ones (the trimmer runs every 2 s).
    c.batch_execute(
        "CREATE TABLE kept (id INT, v INT);
         CREATE TABLE gone (id INT, v INT);
         CREATE SUBSCRIPTION day FROM kept WITH (retention = '1 day');
         CREATE SUBSCRIPTION second FROM gone WITH (retention = '1s');
         INSERT INTO kept VALUES (1, 1), (2, 2);
         INSERT INTO gone VALUES (1, 1), (2, 2);",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    c.batch_execute(
        "DECLARE from_day SUBSCRIPTION CURSOR FOR day SINCE begin();
         DECLARE from_second SUBSCRIPTION CURSOR FOR second SINCE begin();",
    )
    .await
    .unwrap();
    let (kept, _) = fetch(&c, "FETCH 10 FROM from_day").await;
    assert_eq!(kept, ["1|1|Insert", "2|2|Insert"]);
    assert!(fetch(&c, "FETCH 10 FROM from_second").await.0.is_empty());
    let e = c
        .batch_execute(&format!(
            "DECLARE old SUBSCRIPTION CURSOR FOR second SINCE {}",
            unix_ms() - 60_000
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023", "{e}");

    // The subscription and its changes survive kill -9; cursors are the session's.
    let since = unix_ms() - 1;
    c.batch_execute("INSERT INTO t VALUES (5, 50)")
        .await
        .unwrap();
    server.kill9().await.unwrap();
    server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    assert_eq!(error_code(&c, "FETCH 1 FROM c").await, "34000");
    c.batch_execute(&format!(
        "DECLARE again SUBSCRIPTION CURSOR FOR s SINCE {since}"
    ))
    .await
    .unwrap();
    assert_eq!(fetch(&c, "FETCH 10 FROM again").await.0, ["5|50|Insert"]);

    // Errors.
    for (sql, code) in [
        ("CREATE SUBSCRIPTION s FROM t", "42710"),
        ("CREATE SUBSCRIPTION x FROM nope", "42P01"),
        (
            "CREATE SUBSCRIPTION x FROM t WITH (retention = 'forever')",
            "22023",
        ),
        ("DECLARE again SUBSCRIPTION CURSOR FOR s", "42P03"),
        ("DECLARE y SUBSCRIPTION CURSOR FOR nope", "42704"),
        ("FETCH 1 FROM nope", "34000"),
        ("CLOSE nope", "34000"),
        ("DROP SUBSCRIPTION nope", "42704"),
        ("DECLARE z SUBSCRIPTION CURSOR FOR s SINCE soon", "42601"),
    ] {
        assert_eq!(error_code(&c, sql).await, code, "{sql}");
    }
    assert_eq!(error_code(&c, "FETCH 1 FROM nope").await, "34000");
    c.batch_execute("CREATE SUBSCRIPTION IF NOT EXISTS s FROM t; CLOSE again; CLOSE ALL")
        .await
        .unwrap();
    // A dropped relation takes its subscriptions with it.
    c.batch_execute("DROP TABLE kept").await.unwrap();
    assert_eq!(
        error_code(&c, "DECLARE w SUBSCRIPTION CURSOR FOR day").await,
        "42704"
    );
    c.batch_execute("DROP SUBSCRIPTION s; DROP SUBSCRIPTION IF EXISTS s")
        .await
        .unwrap();
    server.kill9().await.unwrap();
}
