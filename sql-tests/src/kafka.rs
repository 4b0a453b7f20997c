//! A Kafka-protocol broker for the tests: Tansu (a Kafka-compatible broker from crates.io),
//! installed by `scripts/deps` into `~/.cache/rivulet-tansu`, started on a free loopback port
//! with a file-backed store in a temporary directory, and killed when dropped.
//!
//! Tansu refuses `EndTxn`, so the tests of transactions use its successor nisshi
//! ([`Broker::start_nisshi`], in `~/.cache/rivulet-nisshi`), which commits, aborts and fences.
//! Its one gap: a fetch carries no list of aborted transactions, so a `read_committed` consumer
//! would still be handed aborted records. [`committed_records`] therefore reads the topic's
//! stored batches and applies the COMMIT and ABORT markers itself: a transactional record
//! counts only once a COMMIT marker of its producer follows it.
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

/// The `nisshi` binary: `RIVULET_NISSHI`, or where `scripts/deps` installs it.
pub fn nisshi_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RIVULET_NISSHI") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/rivulet-nisshi/bin/nisshi")
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    db: &'static str,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Broker {
    /// Starts a Tansu broker with an empty store.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(tansu_bin(), "sqlite://tansu.db").await
    }

    /// Starts a nisshi broker (transactions) with an empty store.
    pub async fn start_nisshi() -> anyhow::Result<Self> {
        Self::start_with(nisshi_bin(), "sqlite://nisshi.db").await
    }

    async fn start_with(bin: PathBuf, db: &'static str) -> anyhow::Result<Self> {
        let mut b = Self {
            child: None,
            port: free_port()?,
            dir: tempfile::tempdir()?,
            bin,
            db,
        };
        b.launch().await?;
        Ok(b)
    }

    /// `host:port` for `properties.bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let bin = &self.bin;
        if !bin.exists() {
            bail!(
                "{} not found: scripts/deps installs it (or set RIVULET_TANSU, RIVULET_NISSHI)",
                bin.display()
            );
        }
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(bin)
            .arg("broker")
            .args(["--cluster-id", "rivulet"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", self.db])
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
        bail!(
            "{} did not listen on port {} within 10 s",
            bin.display(),
            self.port
        )
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
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .current_dir(self.dir.path())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "{} topic create {topic}: {}",
                self.bin.display(),
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

/// Every record value of partition `partition` of `topic`, from its start to its end now, read
/// as a consumer reads it.
pub fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> anyhow::Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "rivulet-test-reader")
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < high {
        if std::time::Instant::now() > deadline {
            bail!("read {next} of {high} records of {topic}/{partition}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            next = m.offset() + 1;
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    Ok(out)
}

/// A record's key and value (a tombstone has no value).
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A topic partition's records as a `read_committed` reader must see them, worked out from its
/// stored batches (see the module documentation), and what it must not see.
#[derive(Debug, Default)]
pub struct Committed {
    /// Values of committed records (a tombstone is `None`), in offset order, with their keys.
    pub records: Vec<KeyValue>,
    /// Records of aborted transactions.
    pub aborted: usize,
    /// Records of transactions neither committed nor aborted yet.
    pub open: usize,
}

impl std::fmt::Display for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} committed, {} aborted, {} open",
            self.records.len(),
            self.aborted,
            self.open
        )
    }
}

/// Reads partition `partition` of `topic` from its start to its end as stored, and applies the
/// transaction markers.
pub fn committed_records(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Committed> {
    use kafka_protocol::records::RecordBatchDecoder;
    let cluster = rivulet_connectors::kafka::wire::Cluster::new(bootstrap);
    let mut out = Committed::default();
    // Transactional records waiting for their producer's marker, by producer id.
    let mut pending: std::collections::HashMap<i64, Vec<KeyValue>> =
        std::collections::HashMap::new();
    let mut offset = 0i64;
    loop {
        let batches = cluster
            .fetch(topic, partition, offset, 4 << 20)
            .map_err(anyhow::Error::msg)?;
        let before = offset;
        for mut batch in batches {
            let set = RecordBatchDecoder::decode(&mut batch)?;
            for r in set.records {
                if r.offset < offset {
                    continue;
                }
                offset = r.offset + 1;
                if r.control {
                    // A control record's key: version (2 bytes), type (2 bytes: 0 abort, 1 commit).
                    let key = r.key.unwrap_or_default();
                    let commit = key.len() >= 4 && key[3] == 1;
                    let txn = pending.remove(&r.producer_id).unwrap_or_default();
                    if commit {
                        out.records.extend(txn);
                    } else {
                        out.aborted += txn.len();
                    }
                    continue;
                }
                let record = (r.key.map(|k| k.to_vec()), r.value.map(|v| v.to_vec()));
                if r.transactional {
                    pending.entry(r.producer_id).or_default().push(record);
                } else {
                    out.records.push(record);
                }
            }
        }
        // The end (no batch), or nothing past `offset` in what came back.
        if offset == before {
            break;
        }
    }
    out.open = pending.values().map(Vec::len).sum();
    Ok(out)
}
