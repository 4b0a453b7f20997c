//! Test harness: the real `rivulet` binary, started on a free loopback port with its own data dir,
//! and a `sqllogictest` driver that talks to it over tokio-postgres, in the simple or the extended
//! query protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The benchmarks' JSON bid stream.
pub mod bids;
/// The Dockerfile read as instructions, for the Docker Compose and Kubernetes tests.
pub mod dockerfile;
/// A Kafka-protocol broker (Tansu) for the Kafka tests.
pub mod kafka;
/// The randomized oracle tests' driver: random DML, FLUSH, each view against its query, kill -9.
pub mod oracle;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// `text` as the tail of an unquoted identifier: ASCII letters and digits lowercased, anything
/// else `_` (a database named after a test file).
pub fn identifier(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The `rivulet` binary under test: `RIVULET_BIN`, or the one cargo built beside this test.
pub fn rivulet_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RIVULET_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> -> target/debug/rivulet (built by `cargo test --workspace`, because
    // the server package has integration tests of its own).
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_default();
    dir.join("rivulet")
}

/// The rows of `sql` (simple protocol) as text, columns joined by `|`, NULL as `NULL`, in the order
/// the server sent them.
pub async fn text_rows(client: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .with_context(|| sql.to_string())?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect())
}

/// [`text_rows`], sorted: for comparing results whose order SQL leaves open.
pub async fn sorted_rows(client: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut rows = text_rows(client, sql).await?;
    rows.sort();
    Ok(rows)
}

/// Runs a tokio-postgres connection in the background; it ends when its client is dropped.
#[allow(clippy::disallowed_methods)] // detached on purpose: the client owns the connection's life
pub fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    });
}

/// Reads `lines` to their end in the background (the server's stdout).
#[allow(clippy::disallowed_methods)] // ends with the server's stdout
fn drain(mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// Starts the binary with `args` and `env`, expecting it to refuse to start: its standard error.
pub async fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(rivulet_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs");
    assert!(!out.status.success(), "the server started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running server; killed when dropped.
pub struct TestServer {
    child: Child,
    pub port: u16,
    /// The HTTP endpoint's port (`/metrics`, `/ready`, the dashboard), unless the flags turned
    /// it off.
    pub http_port: Option<u16>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with a fresh temporary data dir.
    pub async fn start() -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_in(&dir).await?;
        s._temp = Some(temp);
        Ok(s)
    }

    /// Starts a server on `data_dir` (kept after the server stops).
    pub async fn start_in(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[]).await
    }

    /// Starts a server with a fresh temporary data dir and extra command-line flags.
    pub async fn start_with_flags(flags: &[&str]) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_with(&dir, flags).await?;
        s._temp = Some(temp);
        Ok(s)
    }

    /// Starts a server on `data_dir` (kept after the server stops) with extra command-line flags.
    pub async fn start_with(data_dir: &Path, flags: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(data_dir, flags, &[]).await
    }

    /// [`TestServer::start_with`] with extra environment variables (test hooks).
    pub async fn start_with_env(
        data_dir: &Path,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(data_dir, flags, env, None).await
    }

    /// [`TestServer::start_with`], logging at `info` into file `log` (appended to), for tests
    /// that read what the server logs.
    pub async fn start_logging(
        data_dir: &Path,
        flags: &[&str],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(data_dir, flags, &[], Some(log)).await
    }

    async fn launch(
        data_dir: &Path,
        flags: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let bin = rivulet_bin();
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build -p rivulet` or set RIVULET_BIN",
                bin.display()
            );
        }
        // Servers run side by side: each gets a free HTTP port too, unless the test picks one.
        let http = if flags.iter().any(|f| f.starts_with("--http-listen")) {
            &[][..]
        } else {
            &["--http-listen", "127.0.0.1:0"][..]
        };
        let mut child = Command::new(&bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(http)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log")
            .arg(match log {
                Some(_) => "info".into(),
                None => std::env::var("RIVULET_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            })
            .args(flags)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                ),
                None => Stdio::inherit(),
            })
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("server did not start within 30 s")??
            .context("server exited before listening")?;
        let port = line
            .split_whitespace()
            .find_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
            .with_context(|| format!("no port in {line:?}"))?;
        let http_off = flags.windows(2).any(|w| w == ["--http-listen", "off"]);
        let http_port = if http_off {
            None
        } else {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .context("server did not print its HTTP address within 30 s")??
                .context("server exited before serving HTTP")?;
            line.strip_prefix("rivulet http on ")
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
        };
        // The server may print more; nobody reads it, so it must not fill the pipe.
        drain(lines);
        Ok(Self {
            child,
            port,
            http_port,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        })
    }

    /// Connects to `database` as `root`.
    pub async fn connect(&self, database: &str) -> anyhow::Result<Client> {
        let conn_str = format!(
            "host=127.0.0.1 port={} user=root dbname={database}",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&conn_str, NoTls).await?;
        drive(connection);
        Ok(client)
    }

    /// CPU time (user + system) the server process has used so far, from `/proc`.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("server has exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
            + fields.get(12).context("no stime")?.parse::<u64>()?;
        // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Resident memory of the server process in bytes, from `/proc`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let kb = self.proc_status("VmRSS")?;
        Ok(kb * 1024)
    }

    /// Threads of the server process, from `/proc`.
    pub fn threads(&self) -> anyhow::Result<u64> {
        self.proc_status("Threads")
    }

    /// Open file descriptors of the server process, from `/proc`.
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        let pid = self.child.id().context("server has exited")?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// The first number of the `/proc/<pid>/status` line `field`.
    fn proc_status(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self.child.id().context("server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        line.split_whitespace()
            .nth(1)
            .context("empty status line")?
            .parse()
            .context("bad status number")
    }

    /// Sends SIGTERM (a graceful shutdown, as Kubernetes asks for one) and waits for the process
    /// to exit: its exit status and how long it took.
    pub async fn terminate(mut self) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let pid = self.child.id().context("server has exited")?;
        let sent = std::time::Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed: {status}");
        }
        let exit = self.child.wait().await?;
        Ok((exit, sent.elapsed()))
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// A dropped server is killed and reaped before the drop returns: a test that starts another
/// server on the same data dir right after must not find RocksDB's lock still held by the
/// process being killed (`kill_on_drop` alone only sends the signal).
impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

/// Which query protocol the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

/// An error as the runner prints it: `SQLSTATE: message`.
#[derive(Debug)]
pub struct PgError {
    code: Option<String>,
    message: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{c}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError {
                code: Some(db.code().code().to_string()),
                message: db.message().to_string(),
            },
            None => PgError {
                code: None,
                message: e.to_string(),
            },
        }
    }
}

/// How long one statement of an `.slt` file may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A sqllogictest connection.
pub struct Postgres {
    client: Client,
    protocol: Protocol,
}

impl Postgres {
    /// Wraps a connected client.
    pub fn new(client: Client, protocol: Protocol) -> Self {
        Self { client, protocol }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Postgres {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let run = async {
            match self.protocol {
                Protocol::Simple => run_simple(&self.client, sql).await,
                Protocol::Extended => run_extended(&self.client, sql).await,
            }
        };
        // A statement that hangs fails by itself, naming itself, before the file's own timeout.
        match tokio::time::timeout(STATEMENT_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => Err(PgError {
                code: None,
                message: format!(
                    "no answer in {} s ({:?} protocol) to: {sql}",
                    STATEMENT_TIMEOUT.as_secs(),
                    self.protocol
                ),
            }),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "rivulet"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.code.clone()
    }
}

async fn run_simple(client: &Client, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
    let messages = client.simple_query(sql).await?;
    let mut rows = Vec::new();
    let mut width = None;
    let mut count = 0;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => width = Some(cols.len()),
            SimpleQueryMessage::Row(row) => {
                width = Some(row.len());
                rows.push((0..row.len()).map(|i| text_cell(row.get(i))).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    match width {
        Some(w) => Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; w],
            rows,
        }),
        None => Ok(DBOutput::StatementComplete(count)),
    }
}

async fn run_extended(client: &Client, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
    let stmt = client.prepare(sql).await?;
    if stmt.columns().is_empty() {
        let n = client.execute(&stmt, &[]).await?;
        return Ok(DBOutput::StatementComplete(n));
    }
    let rows = client.query(&stmt, &[]).await?;
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let out = rows
        .iter()
        .map(|row| {
            (0..types.len())
                .map(|i| binary_cell(row, i, &types[i]))
                .collect()
        })
        .collect();
    Ok(DBOutput::Rows {
        types: vec![DefaultColumnType::Any; types.len()],
        rows: out,
    })
}

fn text_cell(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some("") => "(empty)".into(),
        Some(s) => s.to_string(),
    }
}

/// A value received in binary form, printed as Postgres' text output would print it.
fn binary_cell(row: &tokio_postgres::Row, i: usize, ty: &Type) -> String {
    fn get<'a, T: FromSql<'a> + ToString>(row: &'a tokio_postgres::Row, i: usize) -> String {
        match row.try_get::<_, Option<T>>(i) {
            Ok(Some(v)) => text_cell(Some(&v.to_string())),
            Ok(None) => "NULL".into(),
            Err(e) => format!("<decode error: {e}>"),
        }
    }
    match *ty {
        Type::BOOL => match row.try_get::<_, Option<bool>>(i) {
            Ok(Some(b)) => if b { "t" } else { "f" }.into(),
            Ok(None) => "NULL".into(),
            Err(e) => format!("<decode error: {e}>"),
        },
        Type::INT2 => get::<i16>(row, i),
        Type::INT4 => get::<i32>(row, i),
        Type::INT8 => get::<i64>(row, i),
        Type::OID => get::<u32>(row, i),
        Type::FLOAT4 => get::<f32>(row, i),
        Type::FLOAT8 => get::<f64>(row, i),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get::<String>(row, i),
        _ => match row.try_get::<_, Option<RawText>>(i) {
            Ok(Some(v)) => text_cell(Some(&v.0)),
            Ok(None) => "NULL".into(),
            Err(e) => format!("<decode error: {e}>"),
        },
    }
}

/// Any other type is requested in text form by tokio-postgres? No: it always asks binary, so the
/// remaining types are decoded here by their Postgres binary layouts.
struct RawText(String);

impl<'a> FromSql<'a> for RawText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        crate::binary::to_text(ty, raw).map(RawText)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Postgres binary formats to Postgres text output, for the types Rivulet sends.
pub mod binary;

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_as(port, path, None).await
}

/// [`http_get`] with an `Authorization` header's value (`Basic ...`), if given.
pub async fn http_get_as(port: u16, path: &str, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{authorization}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("http response within 10 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    // Chunked bodies (axum streams some): join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}
