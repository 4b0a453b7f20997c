//! Golden tests of the streaming planner, through the real `rivulet` binary: SQL scripts in,
//! `EXPLAIN` text (or the error) out.
//!
//! Each `sql-tests/golden/<case>.sql` is a script of statements (each ends with `;` at the end of
//! a line; `--` lines are comments). One server runs every case, each in a database of its own
//! (`g_<case>`, dropped after the case, which stops its jobs), one session per case; the server
//! starts with `--streaming-parallelism 4`, so keyed stages have 4 instances until a case SETs
//! another. Statements go to the server as they are, over the simple query protocol:
//! - `CREATE MATERIALIZED VIEW` and `CREATE SINK` are sent first as `EXPLAIN CREATE ...`,
//!   whose plan (or error) is printed, then as themselves, so later views can read them (an
//!   error of the CREATE after a plan is printed too);
//! - any other statement prints the rows it returns (`EXPLAIN CREATE MATERIALIZED VIEW`), or
//!   nothing: `CREATE TABLE` and `SET` print only an error.
//!
//! An error prints as `ERROR <SQLSTATE>: <message>` with the server's `DETAIL:` and `HINT:`
//! lines. The output is compared with `<case>.out`; `RIVULET_GOLDEN_UPDATE=1 cargo test -p
//! rivulet-sql-tests --test golden` rewrites the expected files instead, for review in the diff.
//! Tables stay empty, so the views' jobs idle; a statement gets 30 s.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rivulet_sql_tests::TestServer;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The environment variable that makes the tests write the expected files.
const UPDATE: &str = "RIVULET_GOLDEN_UPDATE";
/// Instances of keyed stages until a case sets `streaming_parallelism`.
const PARALLELISM: &str = "4";
/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    let update = std::env::var_os(UPDATE).is_some_and(|v| !v.is_empty() && v != "0");
    let server = TestServer::start_with_flags(&["--streaming-parallelism", PARALLELISM])
        .await
        .expect("server starts");
    let admin = server.connect("dev").await.unwrap();
    let mut failed = Vec::new();
    for case in &cases {
        let sql = std::fs::read_to_string(case).unwrap();
        let name = case.file_stem().unwrap().to_string_lossy().to_string();
        let actual = run_case(&server, &admin, &name, &sql).await;
        let expected_path = case.with_extension("out");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failed.push(format!(
                "{}:\n{}",
                expected_path.display(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} golden cases differ (rerun with {UPDATE}=1 to accept the new output, then \
         review the diff):\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Runs one case in database `g_<name>`: the text compared with its `.out` file.
async fn run_case(server: &TestServer, admin: &Client, name: &str, sql: &str) -> String {
    let db = rivulet_sql_tests::identifier(&format!("g_{name}"));
    let setup = format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}");
    admin
        .simple_query(&setup)
        .await
        .unwrap_or_else(|e| panic!("{setup}: {e}"));
    let client = server.connect(&db).await.unwrap();
    let mut out = String::new();
    for text in statements(sql) {
        match run_statement(&client, &text).await {
            Ok(None) => {}
            Ok(Some(lines)) => {
                let _ = writeln!(out, "{text}\n----\n{}\n", lines.join("\n"));
            }
            Err(e) => {
                // A statement without an answer leaves the session busy: the case ends here.
                let _ = writeln!(out, "{text}\n----\n{e}\n");
                break;
            }
        }
    }
    drop(client);
    let drop = format!("DROP DATABASE {db}");
    admin
        .simple_query(&drop)
        .await
        .unwrap_or_else(|e| panic!("{drop}: {e}"));
    out
}

/// The statements of a script, without comment lines and the final `;`: a statement ends with
/// the first line that ends with `;`.
fn statements(sql: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match line.trim_end().strip_suffix(';') {
            Some(last) => {
                current.push(last);
                all.push(current.join("\n").trim().to_string());
                current.clear();
            }
            None => current.push(line),
        }
    }
    let rest = current.join("\n");
    if !rest.trim().is_empty() {
        all.push(rest.trim().to_string());
    }
    all
}

/// Runs one statement: `Some(lines)` to print, `None` for a statement that prints nothing;
/// `Err` when the server did not answer in time.
async fn run_statement(client: &Client, text: &str) -> Result<Option<Vec<String>>, String> {
    let words: Vec<String> = text
        .split_whitespace()
        .take(3)
        .map(str::to_uppercase)
        .collect();
    let sink = words.get(..2) == Some(&["CREATE".to_string(), "SINK".to_string()][..]);
    if words != ["CREATE", "MATERIALIZED", "VIEW"] && !sink {
        return Ok(answer(query(client, text).await?));
    }
    let explained = query(client, &format!("EXPLAIN {text}")).await?;
    let created = query(client, text).await?;
    let mut lines = answer(explained.clone()).unwrap_or_default();
    match (explained, created) {
        (Ok(_), Err(e)) => lines.extend(e),
        (Err(_), Ok(_)) => lines.push("(but the CREATE succeeded)".into()),
        _ => {}
    }
    Ok(Some(lines))
}

/// What a statement's answer prints: its rows (one line per row, columns joined by `|`) if it
/// has any, its error, or nothing.
fn answer(result: Result<Vec<String>, Vec<String>>) -> Option<Vec<String>> {
    match result {
        Ok(rows) if rows.is_empty() => None,
        Ok(rows) | Err(rows) => Some(rows),
    }
}

/// Sends `sql` as a simple query: `Ok(rows)` or `Err(error lines)` from the server, or the
/// outer `Err` if it did not answer within [`STATEMENT_TIMEOUT`].
async fn query(client: &Client, sql: &str) -> Result<Result<Vec<String>, Vec<String>>, String> {
    let Ok(result) = tokio::time::timeout(STATEMENT_TIMEOUT, client.simple_query(sql)).await else {
        return Err(format!(
            "(no answer within {} s: the case stops here)",
            STATEMENT_TIMEOUT.as_secs()
        ));
    };
    Ok(match result {
        Ok(messages) => Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL"))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()),
        Err(e) => Err(error_lines(&e)),
    })
}

/// An error as the server sent it: `ERROR <SQLSTATE>: <message>`, then its detail and hint.
fn error_lines(e: &tokio_postgres::Error) -> Vec<String> {
    let Some(db) = e.as_db_error() else {
        return vec![format!("ERROR: {e}")];
    };
    let mut lines = vec![format!("ERROR {}: {}", db.code().code(), db.message())];
    if let Some(detail) = db.detail() {
        lines.push(format!("DETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        lines.push(format!("HINT: {hint}"));
    }
    lines
}

/// A line diff of `expected` and `actual`: `-` lines only expected, `+` lines only produced,
/// with two lines of context around each change.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // Longest common subsequence, by dynamic programming (files are a few hundred lines).
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 3).min(ops.len());
        ops[lo..hi].iter().any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{op} {line}");
        } else {
            skipped = true;
        }
    }
    out
}
