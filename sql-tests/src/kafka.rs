//! A Kafka-protocol broker for the tests: Tansu (a Kafka-compatible broker from crates.io),
//! installed by `scripts/deps` into `~/.cache/rivulet-tansu`, started on a free loopback port
//! with a file-backed store in a temporary directory, and killed when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio::process::{Child, Command};

/// The `tansu` binary: `RIVULET_TANSU`, or where `scripts/deps` installs it.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RIVULET_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/rivulet-tansu/bin/tansu")
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Broker {
    /// Starts a broker with an empty store.
    pub async fn start() -> anyhow::Result<Self> {
        let mut b = Self {
            child: None,
            port: free_port()?,
            dir: tempfile::tempdir()?,
        };
        b.launch().await?;
        Ok(b)
    }

    /// `host:port` for `properties.bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let bin = tansu_bin();
        if !bin.exists() {
            bail!(
                "{} not found: scripts/deps installs it (or set RIVULET_TANSU)",
                bin.display()
            );
        }
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--cluster-id", "rivulet"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("tansu did not listen on port {} within 10 s", self.port)
    }

    /// Kills the broker (its store stays).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(tansu_bin())
            .args(["topic", "create", topic])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .current_dir(self.dir.path())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "tansu topic create {topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A producer to this broker.
    pub fn producer(&self) -> anyhow::Result<TestProducer> {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "1")
            .set("log_level", "3")
            .create()?;
        Ok(TestProducer(p))
    }
}

/// Produces records to chosen partitions and waits for them to be written.
pub struct TestProducer(BaseProducer);

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl TestProducer {
    /// Sends `records` to `topic` and flushes.
    pub fn send(&self, topic: &str, records: &[Record<'_>]) -> anyhow::Result<()> {
        for r in records {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            if let Some(v) = r.value {
                rec = rec.payload(v);
            }
            if let Some(t) = r.timestamp {
                rec = rec.timestamp(t);
            }
            if !r.headers.is_empty() {
                let mut h = rdkafka::message::OwnedHeaders::new();
                for (k, v) in &r.headers {
                    h = h.insert(rdkafka::message::Header {
                        key: k,
                        value: Some(*v),
                    });
                }
                rec = rec.headers(h);
            }
            self.enqueue(rec)?;
        }
        // Queued records wait in librdkafka while a broker is down: flush until they are written
        // (never sent again, which could write them twice).
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            match self.0.flush(Duration::from_secs(5)) {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => bail!("flush: {e}"),
                Err(_) => {}
            }
        }
    }

    /// Queues values to one partition without waiting for them to be written (a paced
    /// producer); [`TestProducer::send`] or dropping the producer later writes what is queued.
    pub fn queue_values(
        &self,
        topic: &str,
        partition: i32,
        values: &[String],
    ) -> anyhow::Result<()> {
        for v in values {
            self.enqueue(
                BaseRecord::to(topic)
                    .partition(partition)
                    .payload(v.as_bytes()),
            )?;
        }
        Ok(())
    }

    /// Queues one record, waiting while librdkafka's queue is full.
    fn enqueue(&self, mut rec: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
        loop {
            match self.0.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                        bail!("produce: {e}");
                    }
                    self.0.poll(Duration::from_millis(1));
                    rec = back;
                }
            }
        }
        self.0.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until every queued record is written.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.0.flush(Duration::from_secs(60))?;
        Ok(())
    }

    /// Sends JSON values (strings) to one partition.
    pub fn send_values(
        &self,
        topic: &str,
        partition: i32,
        values: &[String],
    ) -> anyhow::Result<()> {
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record {
                partition,
                value: Some(v.as_bytes()),
                ..Record::default()
            })
            .collect();
        self.send(topic, &records)
    }
}
