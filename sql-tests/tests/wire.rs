//! Bad bytes on the wire never take the server down: random startup packets, absurd lengths,
//! unknown message types and messages cut off mid-way each end at most their own connection, and
//! a well-behaved client connecting afterwards is served as usual.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rivulet_sql_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A small deterministic generator (xorshift64), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

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

fn message(tag: u8, body: &[u8], declared_len: i32) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&declared_len.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Sends `bytes` on a fresh connection, then reads whatever comes back until the server closes the
/// connection or a short timeout passes.
async fn send(port: u16, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        panic!("server stopped accepting connections");
    };
    let _ = stream.write_all(bytes).await;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

async fn still_serves(server: &TestServer) {
    let client = server
        .connect("dev")
        .await
        .expect("a good client still connects");
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn garbage_on_the_wire_ends_only_its_own_connection() {
    let server = TestServer::start().await.unwrap();
    let port = server.port;
    let mut rng = Rng(0x5eed_1234_abcd_9876);

    // Random first packets of every size up to 300 bytes, some with a plausible length prefix.
    for i in 0..150 {
        let n = (rng.next() % 300) as usize;
        let mut bytes = rng.bytes(n);
        if i % 3 == 0 && n >= 8 {
            bytes[..4].copy_from_slice(&(n as i32).to_be_bytes());
        }
        send(port, &bytes).await;
    }

    // Startup packets with absurd or negative lengths, and one cut off in the middle.
    for len in [i32::MAX, -1, 0, 3, 8, 10_000_000] {
        let mut p = startup_packet();
        p[..4].copy_from_slice(&len.to_be_bytes());
        send(port, &p).await;
    }
    let p = startup_packet();
    send(port, &p[..p.len() / 2]).await;

    // A good startup, then bad messages: unknown tags, lying lengths, truncated queries, random
    // message bodies with valid framing.
    let mut after_startup = vec![
        message(b'Q', b"SELECT 1\0", i32::MAX),
        message(b'Q', b"SELECT 1\0", -5),
        message(b'Q', b"SELECT 1\0", 2),
        message(b'Q', b"SELECT 1", 100),
        message(b'Q', b"SELECT 1", 12), // no terminating NUL
        message(b'P', b"\0\0\0", 7),
        message(b'B', b"\0\0\xff\xff\xff\xff", 10),
        message(b'E', b"", 4),
        // Counts pgwire's decoder reads unsigned: 0x8000 parameter types, 0xffff format codes.
        message(b'P', b"\0SELECT 1\0\x80\0", 16),
        message(b'B', b"\0\0\xff\xff\0\0", 10),
        message(b'd', b"not in COPY", 15),
        message(b'!', b"unknown", 11),
    ];
    for _ in 0..60 {
        let tag = b"QPBEDSCHdcfX!"[(rng.next() % 13) as usize];
        let n = (rng.next() % 64) as usize;
        let body = rng.bytes(n);
        after_startup.push(message(tag, &body, (n + 4) as i32));
    }
    for bad in &after_startup {
        let mut bytes = startup_packet();
        bytes.extend_from_slice(bad);
        send(port, &bytes).await;
    }

    // Invalid UTF-8 inside an otherwise valid query.
    let mut bytes = startup_packet();
    let sql = b"SELECT '\xff\xfe'\0";
    bytes.extend(message(b'Q', sql, (sql.len() + 4) as i32));
    send(port, &bytes).await;

    still_serves(&server).await;
    assert_no_panics(&server, None).await;
    server.kill9().await.unwrap();
}

/// No task of the server panicked (pgwire's decoder panics on some short messages; the socket
/// layer refuses those first).
async fn assert_no_panics(server: &TestServer, authorization: Option<&str>) {
    let (status, metrics) =
        rivulet_sql_tests::http_get_as(server.http_port.unwrap(), "/metrics", authorization).await;
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l == "rivulet_panics_total 0"),
        "panics counted: {:?}",
        metrics
            .lines()
            .find(|l| l.starts_with("rivulet_panics_total"))
    );
}

#[tokio::test]
async fn a_client_vanishing_mid_copy_loses_nothing_committed() {
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute("CREATE TABLE c (a INT, b TEXT); INSERT INTO c VALUES (1, 'kept')")
        .await
        .unwrap();

    // COPY started on a raw connection that then disappears without CopyDone.
    let mut bytes = startup_packet();
    let sql = b"COPY c FROM STDIN\0";
    bytes.extend(message(b'Q', sql, (sql.len() + 4) as i32));
    let data = b"2\thalf\n3\tway";
    bytes.extend(message(b'd', data, (data.len() + 4) as i32));
    send(server.port, &bytes).await;

    let rows = client
        .query("SELECT a, b FROM c ORDER BY a", &[])
        .await
        .unwrap();
    let rows: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![(1, "kept".to_string())]);
    still_serves(&server).await;
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn row_limited_execute_resumes_a_suspended_portal() {
    let server = TestServer::start().await.unwrap();
    let mut client = server.connect("dev").await.unwrap();
    client
        .batch_execute("CREATE TABLE p (n INT); INSERT INTO p VALUES (1), (2), (3), (4), (5)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let stmt = tx.prepare("SELECT n FROM p ORDER BY n").await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut fetches = 0;
    loop {
        // Each Execute asks for 2 rows; the server answers PortalSuspended until the last one.
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        fetches += 1;
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
        assert!(fetches <= 4, "portal never finished");
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert!(fetches >= 3);
    tx.commit().await.unwrap();
    server.kill9().await.unwrap();
}

/// With --password, clients log in with SCRAM-SHA-256; a wrong password or user is 28P01 naming
/// the user the client logged in as (libpq sends the user in the startup packet, not in SCRAM).
#[tokio::test]
async fn scram_login_and_wrong_password() {
    let server = TestServer::start_with_flags(&["--user", "alice", "--password", "s3cret"])
        .await
        .unwrap();
    let connect = |user: &str, password: &str| {
        let conn = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=dev",
            server.port
        );
        async move { tokio_postgres::connect(&conn, tokio_postgres::NoTls).await }
    };
    let (client, connection) = connect("alice", "s3cret").await.unwrap();
    rivulet_sql_tests::drive(connection);
    let row = client.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
    // SCRAM's first password message cut short, or announcing more than it holds: 08P01 and
    // the connection ends, as in Postgres; the server goes on.
    for body in [
        &b"SCRAM-SHA-256"[..],
        b"SCRAM-SHA-256\0\0\0",
        b"SCRAM-SHA-256\0\0\0\0\x40n,,n=",
        b"SCRAM-SHA-256\0\xff\xff\xff\x00",
    ] {
        let mut bytes = startup_packet();
        bytes.extend(message(b'p', body, (body.len() + 4) as i32));
        send(server.port, &bytes).await;
    }
    // alice:s3cret
    assert_no_panics(&server, Some("Basic YWxpY2U6czNjcmV0")).await;
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let e = connect(user, password).await.err().unwrap();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "28P01");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
}

/// An empty password (an unset template variable) is no password: a non-loopback address is
/// refused, as without one.
#[tokio::test]
async fn an_empty_password_does_not_open_a_non_loopback_address() {
    let stderr = rivulet_sql_tests::refused_start(
        &[
            "--listen",
            "0.0.0.0:0",
            "--http-listen",
            "off",
            "--data-dir",
            "/nonexistent/never",
        ],
        &[("RIVULET_PASSWORD", "")],
    )
    .await;
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without credentials"),
        "{stderr}"
    );
}
