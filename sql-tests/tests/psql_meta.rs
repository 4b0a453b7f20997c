//! psql's backslash commands against the real server, on a table and a materialized view, with
//! every psql installed: Debian's (`psql` on the PATH, 15 on bookworm) and psql 18, which
//! `scripts/deps-compat` installs under `$RIVULET_COMPAT_DIR/postgresql`.
//! - `meta.sql`: the catalog queries psql sends for `\l`, `\dn`, `\dt`, `\dv`, `\dm`, `\d name`,
//!   `\d+`, `\df`, `\df+`, `\dD`, `\dy`, `\dL`, `\dL+`, `\dO`, `\drds`, `\du` plus `\conninfo`, `\x` and
//!   `\timing`;
//! - `bind.sql` (psql 18+): `\bind`, `\parse`, `\bind_named` and `\close_prepared`, which speak the
//!   extended protocol with named statements, including its errors.
//!
//! psql's whole output is compared to `compat/psql/<script>.psql<major>.out` (reviewed against real
//! PostgreSQL's, `<script>.postgres<major>.reference`). `RIVULET_COMPAT_COMPLETE=1` rewrites the
//! expected files. A psql whose major version has no expected file still has to run every command
//! of `meta.sql` without an error. Skipped (with a message) only where no psql is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rivulet_sql_tests::TestServer;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat/psql")
}

/// psql's major version, from `psql --version` ("psql (PostgreSQL) 15.18 (Debian ...)").
fn psql_major(psql: &Path) -> Option<u32> {
    let out = Command::new(psql).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// Every installed psql with its major version.
fn installed_psqls() -> Vec<(PathBuf, u32)> {
    let compat = match std::env::var_os("RIVULET_COMPAT_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/rivulet-compat"),
    };
    let mut found: Vec<(PathBuf, u32)> = Vec::new();
    for psql in [PathBuf::from("psql"), compat.join("postgresql/bin/psql")] {
        if let Some(major) = psql_major(&psql)
            && !found.iter().any(|(_, m)| *m == major)
        {
            found.push((psql, major));
        }
    }
    if found.is_empty() {
        eprintln!("psql not installed; scripts/deps installs it");
    }
    found
}

/// A server with the table `bids` and the materialized view `per_auction` the scripts describe.
async fn server_with_bids() -> TestServer {
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

/// Runs `script` with `psql`, echoing each line (`-a`), stdout and stderr into one file so that
/// errors stay where they happened. Returns whether psql succeeded and its output, with what
/// changes from run to run (port, timings) replaced.
async fn run_script(psql: &Path, port: u16, script: &str, stop_on_error: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let (psql, script) = (psql.to_path_buf(), script.to_string());
    let path = out_path.clone();
    let status = tokio::task::spawn_blocking(move || {
        let out = std::fs::File::create(&path).unwrap();
        let err = out.try_clone().unwrap();
        Command::new(psql)
            .args(["-X", "-a", "-h", "127.0.0.1", "-U", "root", "-d", "dev"])
            .args(["-p", &port.to_string(), "-P", "pager=off"])
            .args(["-v", &format!("ON_ERROR_STOP={}", u8::from(stop_on_error))])
            .arg("-f")
            .arg(&script)
            .current_dir(compat_dir())
            .env("PGTZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&out_path).unwrap();
    let text = text
        .lines()
        .map(|l| {
            let l = l.replace(&format!("port \"{port}\""), "port \"PORT\"");
            if l.starts_with("Time: ") {
                "Time: <elapsed>".to_string()
            } else if l.starts_with(" Server Port ") || l.starts_with(" Backend PID ") {
                // psql 18's `\conninfo` table.
                l.split('|').next().unwrap_or_default().to_string() + "| <varies>"
            } else {
                l
            }
        })
        .collect::<Vec<_>>();
    (status.success(), without_sizes(&text).join("\n") + "\n")
}

/// `lines` with the sizes of the tables psql lists with `+` (`\dt+`, `\l+`) as `<size>`: a
/// relation's size includes its change log, which the server trims as views catch up. In such a
/// table (from its title to its row count) runs of spaces and dashes are one, since psql aligns
/// the columns, and centres the title, to the sizes' widths.
fn without_sizes(lines: &[String]) -> Vec<String> {
    let sized = |l: &String| l.contains('|') && l.split('|').any(|cell| cell.trim() == "Size");
    let mut out: Vec<String> = lines.to_vec();
    let mut i = 0;
    while i < out.len() {
        if !sized(&out[i]) {
            i += 1;
            continue;
        }
        let mut j = i.saturating_sub(1);
        while j < out.len() {
            let end = out[j].starts_with('(') && out[j].contains(" row");
            out[j] = collapsed(&out[j]);
            j += 1;
            if end {
                break;
            }
        }
        i = j;
    }
    out
}

/// `line` with its sizes (`1456 bytes`, `12 kB`) as `<size>` and its runs of spaces and dashes
/// as one.
fn collapsed(line: &str) -> String {
    let parts: Vec<&str> = line.split(' ').filter(|p| !p.is_empty()).collect();
    let mut words: Vec<&str> = Vec::with_capacity(parts.len());
    let mut k = 0;
    while k < parts.len() {
        let unit = parts.get(k + 1).copied().unwrap_or_default();
        if parts[k].bytes().all(|b| b.is_ascii_digit())
            && matches!(unit, "bytes" | "kB" | "MB" | "GB")
        {
            words.push("<size>");
            k += 2;
        } else {
            words.push(parts[k]);
            k += 1;
        }
    }
    let mut joined = words.join(" ");
    while joined.contains("--") {
        joined = joined.replace("--", "-");
    }
    joined
}

/// Compares `out` with `compat/psql/<name>`, or writes it there under `RIVULET_COMPAT_COMPLETE`.
/// Returns false when there is no such file.
fn check_expected(name: &str, out: &str) -> bool {
    let expected_file = compat_dir().join(name);
    if std::env::var_os("RIVULET_COMPAT_COMPLETE").is_some() {
        std::fs::write(&expected_file, out).unwrap();
        return true;
    }
    match std::fs::read_to_string(&expected_file) {
        Ok(expected) => {
            assert_eq!(out, expected, "psql output differs from {name}");
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn psql_meta_commands_on_tables_and_views() {
    let psqls = installed_psqls();
    if psqls.is_empty() {
        return;
    }
    let server = server_with_bids().await;
    for (psql, major) in psqls {
        let (ok, out) = run_script(&psql, server.port, "meta.sql", true).await;
        // psql reports "Did not find any relations." as a notice; errors stop it (ON_ERROR_STOP).
        assert!(ok, "psql {major} failed:\n{out}");
        assert!(
            !out.contains("ERROR"),
            "psql {major} reported an error:\n{out}"
        );
        if !check_expected(&format!("meta.psql{major}.out"), &out) {
            eprintln!("no meta.psql{major}.out: checked only that every command ran");
        }
    }
}

#[tokio::test]
async fn psql_bind_and_named_statements() {
    let psqls: Vec<_> = installed_psqls()
        .into_iter()
        .filter(|(_, major)| *major >= 18)
        .collect();
    if psqls.is_empty() {
        eprintln!("no psql 18+ (\\parse, \\bind_named); scripts/deps-compat installs one");
        return;
    }
    let server = server_with_bids().await;
    for (psql, major) in psqls {
        let (_, out) = run_script(&psql, server.port, "bind.sql", false).await;
        assert!(
            check_expected(&format!("bind.psql{major}.out"), &out),
            "no bind.psql{major}.out for psql {major}:\n{out}"
        );
    }
}
