//! psql's backslash commands against the real server, on a table and a materialized view: the
//! catalog queries psql sends for `\l`, `\dn`, `\dt`, `\dv`, `\dm`, `\d name`, `\d+`, `\df`, `\df+`,
//! `\dD`, `\dy`, `\dL`, `\dO`, `\drds`, `\du` plus `\conninfo`, `\x` and `\timing`, with psql's
//! whole output compared to `compat/psql/meta.psql<major>.out` (reviewed against real PostgreSQL's).
//! `RIVULET_COMPAT_COMPLETE=1` rewrites the expected file. A psql whose major version has no expected file still has to run
//! every command without an error. Skipped (with a message) only where psql is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use rivulet_sql_tests::TestServer;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/psql")
}

/// psql's major version, from `psql --version` ("psql (PostgreSQL) 15.18 (Debian ...)").
fn psql_major() -> Option<String> {
    let out = Command::new("psql").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next().map(str::to_string)
}

/// The output with what changes from run to run (port, timings) replaced.
fn normalize(out: &str, port: u16) -> String {
    out.lines()
        .map(|l| {
            let l = l.replace(&format!("port \"{port}\""), "port \"PORT\"");
            if l.starts_with("Time: ") {
                "Time: <elapsed>".to_string()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test]
async fn psql_meta_commands_on_tables_and_views() {
    let Some(major) = psql_major() else {
        eprintln!("psql not installed; scripts/deps installs it");
        return;
    };
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
    let port = server.port;
    let script = compat_dir().join("meta.sql");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args(["-X", "-a", "-h", "127.0.0.1", "-U", "root", "-d", "dev"])
            .args(["-p", &port.to_string(), "-P", "pager=off"])
            .args(["-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&script)
            .env("PGTZ", "UTC")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = normalize(&String::from_utf8_lossy(&out.stdout), port);
    // psql reports "Did not find any relations." on stderr; errors would stop it (ON_ERROR_STOP).
    let stderr = String::from_utf8_lossy(&out.stderr).replace(
        &compat_dir().join("meta.sql").display().to_string(),
        "meta.sql",
    );
    assert!(out.status.success(), "psql failed: {stderr}\n{stdout}");
    assert!(!stderr.contains("ERROR"), "psql reported: {stderr}");
    let stdout = format!("{stdout}-- stderr:\n{stderr}");

    let expected_file = compat_dir().join(format!("meta.psql{major}.out"));
    if std::env::var_os("RIVULET_COMPAT_COMPLETE").is_some() {
        std::fs::write(&expected_file, &stdout).unwrap();
        return;
    }
    match std::fs::read_to_string(&expected_file) {
        Ok(expected) => assert_eq!(
            stdout,
            expected,
            "psql output differs from {}",
            expected_file.display()
        ),
        Err(_) => eprintln!(
            "no {} for psql {major}: checked only that every command ran",
            expected_file.display()
        ),
    }
}
