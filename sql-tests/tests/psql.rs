//! psql against the real server: `-c`, multi-statement strings, `COPY FROM STDIN` fed by psql,
//! and `\copy` from a CSV file. Skipped (with a message) only where psql is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use rivulet_sql_tests::TestServer;

fn psql(port: u16, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "root",
            "-d",
            "dev",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn psql_commands_copy_and_backslash_copy() {
    if Command::new("psql").arg("--version").output().is_err() {
        eprintln!("psql not installed; scripts/deps installs it");
        return;
    }
    let server = TestServer::start().await.unwrap();
    let port = server.port;
    let run = move |args: Vec<String>, stdin: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            psql(port, &args, stdin.as_deref())
        })
    };
    let (ok, _, err) = run(
        vec!["-c".into(), "CREATE TABLE bids (auction BIGINT, price BIGINT, channel VARCHAR); INSERT INTO bids VALUES (1, 10, 'web')".into()],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "{err}");

    let (ok, out, err) = run(
        vec!["-c".into(), "COPY bids FROM STDIN WITH (FORMAT csv)".into()],
        Some("2,20,app\n3,30,\"a,b\"\n".into()),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "COPY 2");

    let (ok, _, err) = run(
        vec!["-c".into(), "COPY bids FROM STDIN".into()],
        Some("4\t40\t\\N\n".into()),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bids.csv");
    std::fs::write(&file, "auction,price,channel\n5,50,web\n6,60,app\n").unwrap();
    let copy = format!(
        "\\copy bids FROM '{}' WITH (FORMAT csv, HEADER true)",
        file.display()
    );
    let (ok, _, err) = run(vec!["-c".into(), copy], None).await.unwrap();
    assert!(ok, "{err}");

    let (ok, out, err) = run(
        vec![
            "-c".into(),
            "SELECT auction, price, coalesce(channel, 'null') FROM bids ORDER BY auction".into(),
        ],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "1|10|web\n2|20|app\n3|30|a,b\n4|40|null\n5|50|web\n6|60|app"
    );

    // A bad value fails the whole COPY with 22P02 and stores nothing of it.
    let (ok, _, err) = run(
        vec!["-c".into(), "COPY bids FROM STDIN WITH (FORMAT csv)".into()],
        Some("7,70,x\n8,oops,y\n".into()),
    )
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("invalid input syntax for type bigint: \"oops\""),
        "{err}"
    );
    let (_, out, _) = run(vec!["-c".into(), "SELECT count(*) FROM bids".into()], None)
        .await
        .unwrap();
    assert_eq!(out.trim(), "6");

    // The columns the data leaves out take their defaults: a serial key, a constant.
    let (ok, _, err) = run(
        vec![
            "-c".into(),
            "CREATE TABLE tagged (id BIGSERIAL, v TEXT, tag TEXT DEFAULT 'copied')".into(),
            "-c".into(),
            "INSERT INTO tagged (v) VALUES ('first')".into(),
            "-c".into(),
            "COPY tagged (v) FROM STDIN".into(),
        ],
        Some("a\nb\n".into()),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        vec!["-c".into(), "SELECT * FROM tagged ORDER BY id".into()],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|first|copied\n2|a|copied\n3|b|copied");
}

#[tokio::test]
async fn copy_reads_array_literals() {
    if Command::new("psql").arg("--version").output().is_err() {
        eprintln!("psql not installed; scripts/deps installs it");
        return;
    }
    let server = TestServer::start().await.unwrap();
    let port = server.port;
    let run = move |args: Vec<String>, stdin: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            psql(port, &args, stdin.as_deref())
        })
    };
    let sql = |s: &str| vec!["-c".to_string(), s.to_string()];
    let (ok, _, err) = run(
        sql("CREATE TABLE c (id INT PRIMARY KEY, xs BIGINT[], tags TEXT[])"),
        None,
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    // Text format: the array's own quotes and backslashes pass through COPY's escapes.
    let (ok, _, err) = run(
        sql("COPY c FROM STDIN"),
        Some("1\t{1,2,NULL}\t{a,\"b c\",\"x\\\\\"y\"}\n2\t\\N\t{}\n".into()),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        sql("COPY c FROM STDIN WITH (FORMAT csv)"),
        Some("3,\"{4, 5}\",\"{NULL,\"\"NULL\"\"}\"\n".into()),
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, out, err) = run(sql("SELECT * FROM c ORDER BY id"), None).await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "1|{1,2,NULL}|{a,\"b c\",\"x\\\"y\"}\n2||{}\n3|{4,5}|{NULL,\"NULL\"}"
    );
    // An element that does not parse fails the COPY with 22P02, naming the line.
    let (ok, _, err) = run(sql("COPY c FROM STDIN"), Some("4\t{1,x}\t{}\n".into()))
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("invalid input syntax for type bigint[]: \"{1,x}\"")
            && err.contains("COPY c, line 1, column xs"),
        "{err}"
    );
}
