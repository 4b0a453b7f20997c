//! Real Postgres client libraries against the real server, each on a table and a materialized view:
//! the Python drivers (psycopg 3, psycopg2, asyncpg, SQLAlchemy 2.x's and 1.4's `inspect()`), node-postgres and
//! pgjdbc's `DatabaseMetaData`. The clients live outside the repository, installed by
//! `scripts/deps-compat` (run by `scripts/deps`) under `$RIVULET_COMPAT_DIR` (default
//! `~/.cache/rivulet-compat`); a test whose client is missing says so and passes, as the psql tests
//! do. Each client program checks results, prints one line per check and "N passed, M failed".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use rivulet_sql_tests::TestServer;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

fn install_dir() -> PathBuf {
    match std::env::var_os("RIVULET_COMPAT_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/rivulet-compat"),
    }
}

/// A server with the table and the view every client suite reads.
async fn server() -> TestServer {
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE bids (auction BIGINT NOT NULL, price BIGINT, channel VARCHAR, ts TIMESTAMP);
             INSERT INTO bids VALUES (1, 10, 'web', '2026-01-01 10:00:00'), (1, 30, 'app', '2026-01-01 10:00:01'),
                                     (2, 20, 'web', '2026-01-01 10:00:02');
             CREATE MATERIALIZED VIEW per_auction AS
               SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction;
             FLUSH;",
        )
        .await
        .unwrap();
    server
}

/// Runs a client program (bounded in time), prints its report and fails on any failed check.
async fn run_client(name: &str, mut command: Command) {
    let out: Output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not finish within 240 s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or("no summary");
    assert!(
        out.status.success() && summary.ends_with(", 0 failed"),
        "{name}: {summary}\n{stdout}\n{stderr}"
    );
}

/// Runs `compat/python/<script>` with the Python of venv `venv` (under the install dir).
async fn python_client(name: &str, venv: &str, script: &str) {
    let python = install_dir().join(venv).join("bin/python");
    if !python.exists() {
        eprintln!(
            "{} missing; scripts/deps-compat installs it",
            python.display()
        );
        return;
    }
    let server = server().await;
    let mut command = Command::new(python);
    command
        .arg(compat_dir().join("python").join(script))
        .arg(server.port.to_string());
    run_client(name, command).await;
}

#[tokio::test]
async fn python_drivers() {
    python_client("python drivers", "venv", "clients.py").await;
}

#[tokio::test]
async fn sqlalchemy_1_4() {
    python_client("sqlalchemy 1.4", "venv-sa14", "sqlalchemy14.py").await;
}

#[tokio::test]
async fn node_postgres() {
    let modules = install_dir().join("node/node_modules");
    if !modules.join("pg").exists() || Command::new("node").arg("--version").output().is_err() {
        eprintln!(
            "node or {} missing; scripts/deps-compat installs pg",
            modules.display()
        );
        return;
    }
    let server = server().await;
    let mut command = Command::new("node");
    command
        .arg(compat_dir().join("node/clients.js"))
        .arg(server.port.to_string())
        .env("NODE_PATH", modules);
    run_client("node-postgres", command).await;
}

#[tokio::test]
async fn pgjdbc_database_metadata() {
    // Debian's libpostgresql-jdbc-java.
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    if !jar.exists() || Command::new("javac").arg("-version").output().is_err() {
        eprintln!(
            "a JDK or {} missing; scripts/deps-compat installs them",
            jar.display()
        );
        return;
    }
    let classes = tempfile::tempdir().unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg("-cp")
        .arg(&jar)
        .arg(compat_dir().join("jdbc/Clients.java"))
        .output()
        .unwrap();
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let server = server().await;
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(format!("{}:{}", jar.display(), classes.path().display()))
        .arg("Clients")
        .arg(server.port.to_string());
    run_client("pgjdbc", command).await;
}
