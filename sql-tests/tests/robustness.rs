//! Server robustness against the real binary: a query whose client disconnects stops at once,
//! timeouts and cancel requests stop statements with Postgres' errors, prepared statements never
//! send rows their RowDescription did not announce, one big query cannot take the server's memory,
//! and invalid UTF-8 is refused with 22021 on a connection that stays usable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rivulet_sql_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A query that never ends (Postgres runs it forever too).
const FOREVER: &str =
    "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x) SELECT count(*) FROM x";

fn startup_packet() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    for s in ["user", "root", "database", "dev", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A raw connection past startup (ReadyForQuery received).
async fn raw_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&startup_packet()).await.unwrap();
    read_until_ready(&mut stream).await;
    stream
}

/// The backend messages up to and including the next ReadyForQuery, as (tag, body).
async fn read_until_ready(stream: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head))
            .await
            .expect("no answer in 30 s")
            .expect("connection closed");
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await.unwrap();
        let tag = head[0];
        out.push((tag, body));
        if tag == b'Z' {
            return out;
        }
    }
}

/// The SQLSTATE and message of the first ErrorResponse among `messages`.
fn error_of(messages: &[(u8, Vec<u8>)]) -> Option<(String, String)> {
    let (_, body) = messages.iter().find(|(tag, _)| *tag == b'E')?;
    let mut code = String::new();
    let mut text = String::new();
    for field in body.split(|b| *b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'M') => text = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    Some((code, text))
}

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().expect("a database error");
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test]
async fn a_query_whose_client_disconnects_stops() {
    let server = TestServer::start().await.unwrap();
    let mut stream = raw_connection(server.port).await;
    let mut sql = FOREVER.as_bytes().to_vec();
    sql.push(0);
    stream.write_all(&message(b'Q', &sql)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = server.cpu_time().unwrap();
    drop(stream);
    // Give the server a moment to notice, then measure: an idle server uses (almost) no CPU.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_time().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.cpu_time().unwrap();
    assert!(
        after - before < Duration::from_millis(300),
        "the server kept working after its client left: {:?} of CPU in 2 s (it had used {busy:?})",
        after - before
    );
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn cancel_requests_and_the_server_timeout_stop_statements() {
    let server = TestServer::start_with_flags(&["--statement-timeout", "2s"])
        .await
        .unwrap();
    let client = server.connect("dev").await.unwrap();
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2s");
    let started = std::time::Instant::now();
    let e = client.simple_query(FOREVER).await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "57014".into(),
            "canceling statement due to statement timeout".into()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A cancel request stops the running statement in either protocol; the session goes on.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    for extended in [false, true] {
        let token = client.cancel_token();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        };
        let query = async {
            if extended {
                client.query(FOREVER, &[]).await.map(|_| ())
            } else {
                client.simple_query(FOREVER).await.map(|_| ())
            }
        };
        let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(query, cancel)
        })
        .await
        .expect("the cancel request did not stop the query");
        assert_eq!(
            db_error(&result.unwrap_err()),
            (
                "57014".into(),
                "canceling statement due to user request".into()
            )
        );
        let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 2);
    }
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn prepared_statements_follow_their_tables_and_blocks() {
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute("CREATE TABLE p (a INT); INSERT INTO p VALUES (1)")
        .await
        .unwrap();
    let stmt = client.prepare("SELECT * FROM p").await.unwrap();
    assert_eq!(stmt.columns().len(), 1);

    // Same columns after DROP and CREATE: re-planned, runs.
    client
        .batch_execute("DROP TABLE p; CREATE TABLE p (a INT); INSERT INTO p VALUES (2)")
        .await
        .unwrap();
    let rows = client.query(&stmt, &[]).await.unwrap();
    assert_eq!(rows.first().map(|r| r.get::<_, i32>(0)), Some(2));

    // Other columns: refused, never two values under a one-column RowDescription.
    client
        .batch_execute("DROP TABLE p; CREATE TABLE p (a INT, b INT); INSERT INTO p VALUES (3, 4)")
        .await
        .unwrap();
    let e = client.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "0A000".into(),
            "cached plan must not change result type".into()
        )
    );

    // In a failed block, Parse and Bind get 25P02 like every other statement.
    let aborted = "current transaction is aborted, commands ignored until end of transaction block";
    let one = client.prepare("SELECT 1").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT * FROM nope").await.is_err());
    let e = client.prepare("SELECT 2").await.unwrap_err();
    assert_eq!(db_error(&e), ("25P02".into(), aborted.into()));
    let e = client.query(&one, &[]).await.unwrap_err();
    assert_eq!(db_error(&e), ("25P02".into(), aborted.into()));
    client.batch_execute("ROLLBACK").await.unwrap();
    let rows = client.query(&one, &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let two = client.prepare("SELECT 2").await.unwrap();
    assert_eq!(client.query(&two, &[]).await.unwrap().len(), 1);
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn one_big_query_gets_out_of_memory_and_sorts_spill() {
    let server = TestServer::start_with_flags(&["--query-memory", "32MB"])
        .await
        .unwrap();
    let client = server.connect("dev").await.unwrap();
    // Sorting 3 million rows (about 50 MB) spills to disk and finishes.
    let row = client
        .query_one(
            "SELECT sum(r)::bigint FROM (SELECT row_number() OVER (ORDER BY v DESC) AS r \
             FROM (SELECT value * 7 % 1000003 AS v, repeat('x', 8) AS pad FROM generate_series(1, 3000000))) s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3_000_000 * 3_000_001 / 2);
    // Collecting them into one value cannot spill: 53200, and the server goes on.
    let e = client
        .query_one(
            "SELECT array_length(array_agg(repeat('x', 100)), 1) FROM generate_series(1, 3000000)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "53200");
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn a_connection_idle_in_a_block_is_ended() {
    let server = TestServer::start_with_flags(&["--idle-in-transaction-session-timeout", "300ms"])
        .await
        .unwrap();
    // Outside a block, idling is fine.
    let client = server.connect("dev").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.batch_execute("SELECT 1").await.unwrap();

    // Inside one (also a failed one), the server ends the connection with FATAL 25P03.
    for setup in ["BEGIN", "BEGIN; SELECT * FROM nope"] {
        let mut stream = raw_connection(server.port).await;
        let mut sql = setup.as_bytes().to_vec();
        sql.push(0);
        stream.write_all(&message(b'Q', &sql)).await.unwrap();
        read_until_ready(&mut stream).await;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the connection was not ended")
            .unwrap();
        assert_eq!(rest.first(), Some(&b'E'), "{setup}");
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("25P03"), "{text}");
        assert!(
            text.contains("terminating connection due to idle-in-transaction timeout"),
            "{text}"
        );
    }

    // A session's own setting wins over the server's; 0 turns it off.
    client
        .batch_execute("SET idle_in_transaction_session_timeout = 0; BEGIN")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.batch_execute("SELECT 1; COMMIT").await.unwrap();
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_is_refused_and_the_connection_goes_on() {
    let server = TestServer::start().await.unwrap();
    let mut stream = raw_connection(server.port).await;
    let expected = || {
        Some((
            "22021".to_string(),
            "invalid byte sequence for encoding \"UTF8\": 0xff".to_string(),
        ))
    };

    // Simple protocol: the error, ReadyForQuery, and the next query runs.
    stream
        .write_all(&message(b'Q', b"SELECT '\xff\xfe'\0"))
        .await
        .unwrap();
    assert_eq!(error_of(&read_until_ready(&mut stream).await), expected());
    stream
        .write_all(&message(b'Q', b"SELECT 'ok'\0"))
        .await
        .unwrap();
    let answer = read_until_ready(&mut stream).await;
    assert_eq!(error_of(&answer), None);
    assert!(answer.iter().any(|(tag, _)| *tag == b'D'));

    // Extended protocol: Parse is refused, the rest skipped until Sync, one error in all.
    let mut batch = message(b'P', b"\0SELECT '\xff'\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    stream.write_all(&batch).await.unwrap();
    let answer = read_until_ready(&mut stream).await;
    assert_eq!(error_of(&answer), expected());
    assert_eq!(answer.iter().filter(|(tag, _)| *tag == b'E').count(), 1);
    stream
        .write_all(&message(b'Q', b"SELECT 'still ok'\0"))
        .await
        .unwrap();
    assert_eq!(error_of(&read_until_ready(&mut stream).await), None);

    // A text parameter value that is not UTF-8: refused at Bind, as Postgres does.
    let mut batch = message(b'P', b"\0SELECT $1::text\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\x01\0\0\0\x02\xff\xfe\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    stream.write_all(&batch).await.unwrap();
    let answer = read_until_ready(&mut stream).await;
    assert_eq!(error_of(&answer), expected());
    stream
        .write_all(&message(b'Q', b"SELECT 'ok again'\0"))
        .await
        .unwrap();
    assert_eq!(error_of(&read_until_ready(&mut stream).await), None);

    // Inside a block, the error aborts the block, as any error does.
    stream.write_all(&message(b'Q', b"BEGIN\0")).await.unwrap();
    read_until_ready(&mut stream).await;
    stream
        .write_all(&message(b'Q', b"SELECT '\xff'\0"))
        .await
        .unwrap();
    read_until_ready(&mut stream).await;
    stream
        .write_all(&message(b'Q', b"SELECT 1\0"))
        .await
        .unwrap();
    let answer = read_until_ready(&mut stream).await;
    assert_eq!(error_of(&answer).map(|e| e.0), Some("25P02".into()));
    server.kill9().await.unwrap();
}
