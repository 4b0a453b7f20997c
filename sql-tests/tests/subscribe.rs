//! SUBSCRIBE against the real binary: psycopg (`COPY (SUBSCRIBE ...) TO STDOUT`) gets the
//! snapshot then INSERT, UPDATE and DELETE in commit order, resumes after a server restart from
//! the last epoch it saw, and a client that stops reading neither holds the job back nor keeps
//! its subscription forever; psql prints changes as they commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rivulet_sql_tests::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn python() -> Option<PathBuf> {
    let dir = std::env::var("RIVULET_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rivulet-compat")
        });
    let python = dir.join("venv/bin/python");
    python.exists().then_some(python)
}

/// A running subscriber (scripts/subscribe.py) and its output lines.
struct Subscriber {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Subscriber {
    async fn start(python: &PathBuf, port: u16, query: &str, count: usize, slow: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("observability/subscribe.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(query)
            .arg(count.to_string())
            .args(slow)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = Self {
            _child: child,
            lines,
        };
        assert_eq!(s.next().await, serde_json::json!({"ready": true}));
        s
    }

    /// The next line, within 20 s.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a subscription line within 20 s")
            .unwrap()
            .expect("the subscriber ended early");
        serde_json::from_str(&line).unwrap()
    }

    /// The next line as `epoch|op|columns...`, with its epoch.
    async fn row(&mut self) -> (u64, String) {
        let v = self.next().await;
        let cells: Vec<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("not a row: {v}"))
            .iter()
            .map(|c| c.as_str().unwrap_or("NULL").to_string())
            .collect();
        (cells[0].parse().unwrap(), cells[1..].join("|"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_gets_the_snapshot_then_changes_in_order_and_resumes_after_a_restart() {
    let Some(python) = python() else {
        eprintln!("the compat venv is missing; scripts/deps-compat installs it");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT); \
             CREATE MATERIALIZED VIEW mv AS SELECT k, sum(v) AS s FROM t GROUP BY k; \
             INSERT INTO t VALUES (1, 10), (2, 20); FLUSH;",
        )
        .await
        .unwrap();
    let mut sub = Subscriber::start(
        &python,
        server.port,
        "COPY (SUBSCRIBE TO mv) TO STDOUT",
        6,
        &[],
    )
    .await;
    let (e0, a) = sub.row().await;
    let (e1, b) = sub.row().await;
    assert_eq!(e0, e1, "the snapshot is one commit");
    let mut snapshot = [a, b];
    snapshot.sort();
    assert_eq!(snapshot, ["insert|1|10", "insert|2|20"]);
    client
        .batch_execute("INSERT INTO t VALUES (3, 30); FLUSH;")
        .await
        .unwrap();
    let started = Instant::now();
    let (e2, inserted) = sub.row().await;
    assert_eq!(inserted, "insert|3|30");
    assert!(e2 > e0);
    // Pushed within a few barrier intervals of the commit, not at the next poll of anything.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    client
        .batch_execute("UPDATE t SET v = 11 WHERE k = 1; FLUSH; DELETE FROM t WHERE k = 2; FLUSH;")
        .await
        .unwrap();
    let (e3, before) = sub.row().await;
    let (e4, after) = sub.row().await;
    assert_eq!(
        (before.as_str(), after.as_str()),
        ("update_before|1|10", "update_after|1|11")
    );
    assert_eq!(e3, e4, "an update's two lines are one commit");
    let (e5, deleted) = sub.row().await;
    assert_eq!(deleted, "delete|2|20");
    assert!(e2 < e3 && e4 < e5);
    drop(sub);

    // A new server on the same data: resume after the last epoch seen, nothing twice.
    drop(client);
    drop(server);
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (4, 40); FLUSH;")
        .await
        .unwrap();
    let mut sub = Subscriber::start(
        &python,
        server.port,
        &format!("COPY (SUBSCRIBE mv WITH (SINCE = {e5})) TO STDOUT"),
        1,
        &[],
    )
    .await;
    let (e6, resumed) = sub.row().await;
    assert_eq!(resumed, "insert|4|40");
    assert!(e6 > e5);
    // An epoch the view has not reached is a clear error.
    let mut sub = Subscriber::start(
        &python,
        server.port,
        "COPY (SUBSCRIBE mv WITH (SINCE = 999999)) TO STDOUT",
        1,
        &[],
    )
    .await;
    let err = sub.next().await;
    assert_eq!(err["error"], "22023", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("has no commit 999999 yet"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_stall_the_job_and_ends_with_an_error() {
    let Some(python) = python() else {
        eprintln!("the compat venv is missing; scripts/deps-compat installs it");
        return;
    };
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE t (k INT, pad TEXT); \
             CREATE MATERIALIZED VIEW mv AS SELECT k, pad FROM t WHERE k >= 0;",
        )
        .await
        .unwrap();
    // Reads nothing for 6 s, with at most 5 commits of lag allowed.
    let mut sub = Subscriber::start(
        &python,
        server.port,
        "COPY (SUBSCRIBE mv) TO STDOUT",
        100_000,
        &["6", "5"],
    )
    .await;
    // Far more than the sockets buffer (about 10 MB), one commit each: the subscription's
    // sends block, and the job must go on regardless.
    let started = Instant::now();
    for i in 0..200 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT {i}, repeat('x', 50000) FROM generate_series(1, 1); FLUSH;"
            ))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the job was held back: {:?}",
        started.elapsed()
    );
    let rows = text(&client, "SELECT count(*) FROM mv").await;
    assert_eq!(rows, "200");
    // Once the client reads again, the subscription finds itself far behind and ends.
    let error = loop {
        let v = sub.next().await;
        if v.get("error").is_some() {
            break v;
        }
    };
    assert_eq!(error["error"], "53400", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("commits behind"),
        "{error}"
    );
}

async fn text(client: &tokio_postgres::Client, sql: &str) -> String {
    rivulet_sql_tests::text_rows(client, sql)
        .await
        .unwrap()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_changes_as_they_commit() {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("psql missing; scripts/deps installs it");
        return;
    }
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute("CREATE TABLE t (k INT, name TEXT); INSERT INTO t VALUES (1, 'a\tb');")
        .await
        .unwrap();
    // psql writes COPY data through stdio, which flushes per line only on a terminal: run it
    // in a pseudo-terminal, as a user would.
    let script = r#"
import os, pty, subprocess, sys, time, select
master, slave = pty.openpty()
p = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", sys.argv[1], "-U", "root", "-d", "dev",
                      "-c", "SUBSCRIBE TO t"], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
os.close(slave)
out = b""
end = time.time() + 15
while time.time() < end and out.count(b"\n") < 2:
    r, _, _ = select.select([master], [], [], 0.1)
    if r:
        out += os.read(master, 4096)
    if out.count(b"\n") == 1 and b"sent" not in out:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", sys.argv[1], "-U", "root", "-d", "dev",
                        "-c", "INSERT INTO t VALUES (2, NULL)"], capture_output=True)
        out += b"sent"
p.terminate()
sys.stdout.write(out.decode().replace("sent", ""))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &server.port.to_string()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[0].ends_with("\tinsert\t1\ta\\tb"), "{text:?}");
    assert!(lines[1].ends_with("\tinsert\t2\t\\N"), "{text:?}");
    drop(client);
}

/// tokio-postgres' `copy_out` sends the COPY through the extended protocol (Parse, Bind,
/// Execute): the snapshot then each change arrive as COPY data there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_in_the_extended_protocol_streams_changes() {
    use futures::StreamExt;
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    let subscriber = server.connect("dev").await.unwrap();
    let stream = subscriber
        .copy_out("COPY (SUBSCRIBE t) TO STDOUT")
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let mut next = async || {
        let line = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a line within 20 s")
            .expect("the subscription ended early")
            .unwrap();
        let line = String::from_utf8_lossy(&line).into_owned();
        // Without the epoch, which depends on the commits before.
        line.split_once('\t').unwrap().1.to_string()
    };
    assert_eq!(next().await, "insert\t1\ta\n");
    client
        .batch_execute("UPDATE t SET v = 'b' WHERE id = 1; DELETE FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(next().await, "update_before\t1\ta\n");
    assert_eq!(next().await, "update_after\t1\tb\n");
    assert_eq!(next().await, "delete\t1\tb\n");
    // Another statement with it in one query is refused.
    let e = client
        .batch_execute("SELECT 1; SUBSCRIBE t")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "0A000", "{e}");
}
