//! The Kafka sink: a job's changes as records of one topic, flushed at every barrier.
//!
//! Options, parsed once into [`KafkaSinkOptions`], in RisingWave's spelling (`CREATE SINK ... WITH
//! (connector = 'kafka', topic, properties.bootstrap.server, primary_key) FORMAT PLAIN | UPSERT |
//! DEBEZIUM ENCODE JSON [(force_append_only = 'true')]`) and Flink's (`'connector' = 'kafka' |
//! 'upsert-kafka'`, `'format'` / `'value.format'` = `json` | `csv` | `debezium-json`,
//! `'key.format'`, `'key.fields'`, `'sink.delivery-guarantee'`, `'sink.transactional-id-prefix'`,
//! `'sink.partitioner'`, `'sink.auto-create'` with `'sink.auto-create.partitions'`); every other `properties.*` option goes to librdkafka as it is.
//!
//! What goes out, per change (key: the key columns as JSON or CSV, when there are any):
//! - PLAIN: an insert is a record with the row; the query must be append-only, or the sink
//!   `force_append_only`, which drops deletes and writes update-afters as inserts (RisingWave);
//! - UPSERT: an insert or update-after is the row under its key; a delete is a tombstone (a
//!   record without value); an update-before followed by the update-after of the same key is
//!   nothing (the after replaces it);
//! - DEBEZIUM: an envelope `{"before": row | null, "after": row | null, "op": "c" | "u" | "d"}`,
//!   an update-before and its update-after in one `u` record.
//!
//! Rows are encoded per batch into one reused buffer and produced as they reach the sink; the
//! barrier's pre-commit waits until the broker has acknowledged every record (at-least-once). A
//! record the broker refused after librdkafka's retries fails the job, which restarts from its
//! last checkpoint and writes that epoch again: nothing is lost, and a consumer may see records
//! of the failed epoch twice. While the broker is down the pre-commit keeps waiting (records are
//! never dropped) and the sink reports the trouble. With `'sink.delivery-guarantee' = 'none'` the
//! barrier does not wait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rivulet_engine::changelog::{ChangeBatch, Op};
use rivulet_engine::sink::{Sink, SinkStats, Trouble};
use rivulet_engine::state::StateBatch;
use rivulet_engine::{EngineError, Result as EngineResult};

use crate::ConnectorError;
use crate::encode::{RowEncoder, RowFormat};

/// How changes become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    Plain,
    Upsert,
    Debezium,
}

impl SinkFormat {
    /// RisingWave's name.
    pub fn name(self) -> &'static str {
        match self {
            SinkFormat::Plain => "PLAIN",
            SinkFormat::Upsert => "UPSERT",
            SinkFormat::Debezium => "DEBEZIUM",
        }
    }
}

/// Flink's `sink.delivery-guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    ExactlyOnce,
    AtLeastOnce,
    None,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::None => "none",
        }
    }
}

/// Flink's `sink.partitioner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// By key when there is one (librdkafka's hash), else as librdkafka spreads them.
    Default,
    /// Every record to partition 0 (Flink: each sink instance to one partition; we run one).
    Fixed,
}

/// A Kafka sink's options, parsed.
#[derive(Debug, Clone)]
pub struct KafkaSinkOptions {
    pub topic: String,
    pub bootstrap: String,
    pub format: SinkFormat,
    pub value_format: RowFormat,
    pub key_format: RowFormat,
    /// The key columns, by name (`primary_key`, `key.fields`, or a Flink table's PRIMARY KEY).
    pub key: Vec<String>,
    pub force_append_only: bool,
    pub guarantee: Guarantee,
    pub transactional_id_prefix: Option<String>,
    pub partitioner: Partitioner,
    /// `sink.auto-create`: a missing topic is created at CREATE, with this many partitions
    /// (`sink.auto-create.partitions`, default 1).
    pub auto_create: Option<i32>,
    /// librdkafka's settings: `properties.*` and what the options imply.
    config: ClientConfig,
    /// The options, for the encoders' settings (timestamp format).
    options: BTreeMap<String, String>,
}

fn get<'a>(options: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a String> {
    names.iter().find_map(|n| options.get(*n))
}

fn row_format(name: &str, options: &BTreeMap<String, String>) -> Result<RowFormat, String> {
    match name {
        "json" | "debezium-json" | "upsert-json" => Ok(RowFormat::Json),
        "csv" => Ok(RowFormat::Csv {
            delimiter: match options.get("csv.field-delimiter").map(|d| d.as_bytes()) {
                None => b',',
                Some([d]) => *d,
                Some(_) => {
                    return Err("csv.field-delimiter must be one single-byte character".into());
                }
            },
        }),
        other => Err(format!(
            "format \"{other}\" is not supported by the kafka sink (json, csv, debezium-json)"
        )),
    }
}

impl KafkaSinkOptions {
    /// Reads a sink's `WITH (...)` options (keys lowercased; RisingWave's `FORMAT ... ENCODE
    /// ...` arrives as `format` and `encode`).
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let bad = |m: String| ConnectorError::Option(m);
        let lower = |k: &str| options.get(k).map(|v| v.to_lowercase());
        let topic = get(options, &["topic"])
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| bad("the kafka sink needs 'topic'".into()))?
            .trim()
            .to_string();
        if topic.contains([';', ',']) {
            return Err(bad(format!(
                "the kafka sink writes one topic, and 'topic' is \"{topic}\""
            )));
        }
        let bootstrap = super::bootstrap_servers(options, "sink")?.clone();
        let upsert_kafka = lower("connector").as_deref() == Some("upsert-kafka");
        let format_name = lower("format").or_else(|| lower("value.format"));
        let (format, value_name) = match (format_name.as_deref(), lower("encode")) {
            // RisingWave: FORMAT PLAIN | UPSERT | DEBEZIUM ENCODE JSON.
            (Some("plain"), Some(e)) => (SinkFormat::Plain, e),
            (Some("upsert"), Some(e)) => (SinkFormat::Upsert, e),
            (Some("debezium"), Some(e)) => (SinkFormat::Debezium, e),
            (Some(f @ ("plain" | "upsert" | "debezium")), None) => {
                return Err(bad(format!(
                    "FORMAT {} needs ENCODE JSON",
                    f.to_uppercase()
                )));
            }
            (Some(f), _) if upsert_kafka => (SinkFormat::Upsert, f.to_string()),
            (Some(f @ "debezium-json"), _) => (SinkFormat::Debezium, f.to_string()),
            (Some(f), _) => (SinkFormat::Plain, f.to_string()),
            (None, _) => {
                return Err(bad(
                    "the kafka sink needs a format: FORMAT PLAIN | UPSERT | DEBEZIUM ENCODE JSON \
                     (RisingWave), or 'format' = 'json' | 'csv' | 'debezium-json' (Flink)"
                        .into(),
                ));
            }
        };
        let value_format = row_format(&value_name, options).map_err(bad)?;
        if format == SinkFormat::Debezium && value_format != RowFormat::Json {
            return Err(bad("FORMAT DEBEZIUM needs ENCODE JSON".into()));
        }
        let key_format = match lower("key.format") {
            Some(k) => row_format(&k, options).map_err(bad)?,
            None => RowFormat::Json,
        };
        let key: Vec<String> = get(options, &["primary_key", "key.fields"])
            .map(|k| {
                k.split([',', ';'])
                    .map(|c| c.trim().trim_matches('"').to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if format == SinkFormat::Upsert && key.is_empty() {
            return Err(bad(if upsert_kafka {
                "an upsert-kafka sink table needs a PRIMARY KEY".into()
            } else {
                "a kafka sink with FORMAT UPSERT needs primary_key = 'column, ...'".into()
            }));
        }
        let force_append_only = match lower("force_append_only").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad(format!(
                    "invalid force_append_only \"{other}\": true or false expected"
                )));
            }
        };
        if force_append_only && format != SinkFormat::Plain {
            return Err(bad(format!(
                "force_append_only applies to FORMAT PLAIN, not to FORMAT {}",
                format.name()
            )));
        }
        let guarantee = match lower("sink.delivery-guarantee").as_deref() {
            None | Some("at-least-once") => Guarantee::AtLeastOnce,
            Some("exactly-once") => Guarantee::ExactlyOnce,
            Some("none") => Guarantee::None,
            Some(other) => {
                return Err(bad(format!(
                    "invalid sink.delivery-guarantee \"{other}\": exactly-once, at-least-once \
                     or none expected"
                )));
            }
        };
        let partitioner = match lower("sink.partitioner").as_deref() {
            None | Some("default") => Partitioner::Default,
            Some("fixed") => Partitioner::Fixed,
            Some(other) => {
                return Err(bad(format!(
                    "invalid sink.partitioner \"{other}\": default or fixed expected"
                )));
            }
        };
        let auto_create = match lower("sink.auto-create").as_deref() {
            None | Some("false") => None,
            Some("true") => {
                let partitions = options
                    .get("sink.auto-create.partitions")
                    .map_or(Ok(1), |p| p.trim().parse::<i32>())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        bad(
                            "invalid sink.auto-create.partitions: a positive number expected"
                                .into(),
                        )
                    })?;
                Some(partitions)
            }
            Some(other) => {
                return Err(bad(format!(
                    "invalid sink.auto-create \"{other}\": true or false expected"
                )));
            }
        };
        let mut config = ClientConfig::new();
        for (k, v) in options {
            if let Some(p) = k.strip_prefix("properties.")
                && p != "bootstrap.server"
            {
                config.set(p, v);
            }
        }
        config.set("bootstrap.servers", &bootstrap);
        config.set("log_level", "3");
        // A record waits in librdkafka for as long as the broker is down: the barrier waits
        // with it, and nothing is dropped.
        if config.get("message.timeout.ms").is_none() {
            config.set("message.timeout.ms", "0");
        }
        if config.get("linger.ms").is_none() {
            config.set("linger.ms", "5");
        }
        Ok(Self {
            topic,
            bootstrap,
            format,
            value_format,
            key_format,
            key,
            force_append_only,
            guarantee,
            transactional_id_prefix: options.get("sink.transactional-id-prefix").cloned(),
            partitioner,
            auto_create,
            config,
            options: options.clone(),
        })
    }

    /// The positions of the key columns among `columns`; a name that is not there is an error.
    pub fn key_columns(&self, columns: &[String]) -> Result<Vec<usize>, ConnectorError> {
        self.key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        ConnectorError::Option(format!(
                            "key column \"{k}\" is not a column of the sink ({})",
                            columns.join(", ")
                        ))
                    })
            })
            .collect()
    }

    /// Fails, naming it, when the topic does not exist or the broker cannot be reached.
    pub fn check_topic(&self) -> Result<(), ConnectorError> {
        let producer: BaseProducer = self
            .config
            .create()
            .map_err(|e| ConnectorError::Option(format!("kafka sink: {e}")))?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .map_err(|e| {
                ConnectorError::Option(format!(
                    "cannot reach the kafka broker at {}: {e}",
                    self.bootstrap
                ))
            })?;
        let found = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        match (found, self.auto_create) {
            (true, _) => Ok(()),
            (false, Some(partitions)) => self.create_topic(partitions),
            (false, None) => Err(ConnectorError::Option(format!(
                "topic \"{}\" does not exist on {}",
                self.topic, self.bootstrap
            ))),
        }
    }

    /// Creates the topic (`sink.auto-create`), replication factor 1 unless the broker's default
    /// says otherwise.
    fn create_topic(&self, partitions: i32) -> Result<(), ConnectorError> {
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .create()
            .map_err(|e| ConnectorError::Option(format!("kafka sink: {e}")))?;
        let topic = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .map_err(|e| ConnectorError::Option(format!("cannot create topic: {e}")))?;
        for r in results {
            if let Err((name, code)) = r
                && code != RDKafkaErrorCode::TopicAlreadyExists
            {
                return Err(ConnectorError::Option(format!(
                    "cannot create topic \"{name}\" on {}: {code}",
                    self.bootstrap
                )));
            }
        }
        Ok(())
    }
}

/// The producer's context: counts records the broker refused, keeps the last client error.
#[derive(Default)]
pub struct Delivery {
    failed: AtomicU64,
    error: Mutex<Option<String>>,
}

impl ClientContext for Delivery {
    fn error(&self, error: KafkaError, reason: &str) {
        *self.error.lock() = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.error.lock() = Some(e.to_string());
        }
    }
}

/// Encoded rows of one batch: bytes and where each row's are.
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    fn fill(&mut self, encoder: &RowEncoder, rows: &RecordBatch) -> Result<(), ConnectorError> {
        self.bytes.clear();
        self.ends.clear();
        encoder.encode(rows, |_, b| {
            self.bytes.extend_from_slice(b);
            self.ends.push(self.bytes.len());
            Ok(())
        })
    }

    fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// Where records go, while the sink's encoded rows are borrowed.
struct Out<'a> {
    producer: &'a BaseProducer<Delivery>,
    topic: &'a str,
    fixed: bool,
    stats: &'a mut SinkStats,
}

impl Out<'_> {
    /// Queues one record, serving librdkafka's callbacks while its queue is full.
    fn send(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> EngineResult<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if self.fixed {
            record = record.partition(0);
        }
        self.stats.records += 1;
        self.stats.bytes += (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as u64;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, _)) => return Err(external(e)),
            }
        }
    }
}

/// Writes into `env` the Debezium envelope of rows `before` and `after` of `values`.
fn debezium(
    env: &mut Vec<u8>,
    values: &Encoded,
    before: Option<usize>,
    after: Option<usize>,
    op: &str,
) {
    env.clear();
    env.extend_from_slice(b"{\"before\":");
    match before {
        Some(b) => env.extend_from_slice(values.row(b)),
        None => env.extend_from_slice(b"null"),
    }
    env.extend_from_slice(b",\"after\":");
    match after {
        Some(a) => env.extend_from_slice(values.row(a)),
        None => env.extend_from_slice(b"null"),
    }
    env.extend_from_slice(b",\"op\":\"");
    env.extend_from_slice(op.as_bytes());
    env.extend_from_slice(b"\"}");
}

/// How long one wait for acknowledgements lasts before the sink reports trouble and waits on.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Writes a job's changes to a topic (see the module documentation).
pub struct KafkaSink {
    options: KafkaSinkOptions,
    producer: BaseProducer<Delivery>,
    key_columns: Vec<usize>,
    values: RowEncoder,
    keys: RowEncoder,
    encoded_values: Encoded,
    encoded_keys: Encoded,
    envelope: Vec<u8>,
    stats: SinkStats,
    /// What the barrier waits for, while the broker does not acknowledge.
    trouble: Trouble,
}

fn external(e: impl std::fmt::Display) -> EngineError {
    EngineError::External {
        system: "kafka sink".into(),
        message: e.to_string(),
    }
}

impl KafkaSink {
    /// A sink of rows whose columns are `columns` (the names records carry).
    pub fn new(options: KafkaSinkOptions, columns: &[String]) -> Result<Self, ConnectorError> {
        if options.guarantee == Guarantee::ExactlyOnce {
            return Err(ConnectorError::Option(
                "sink.delivery-guarantee 'exactly-once' is not supported yet (#22): use \
                 'at-least-once'"
                    .into(),
            ));
        }
        let key_columns = options.key_columns(columns)?;
        let key_names: Vec<String> = key_columns.iter().map(|&i| columns[i].clone()).collect();
        let values =
            RowEncoder::new(options.value_format.clone(), &options.options)?.with_names(columns);
        let keys =
            RowEncoder::new(options.key_format.clone(), &options.options)?.with_names(&key_names);
        let producer: BaseProducer<Delivery> = options
            .config
            .create_with_context(Delivery::default())
            .map_err(|e| ConnectorError::Option(format!("kafka sink: {e}")))?;
        let stats = SinkStats {
            connector: "kafka".into(),
            target: options.topic.clone(),
            guarantee: options.guarantee.name().into(),
            ..SinkStats::default()
        };
        Ok(Self {
            options,
            producer,
            key_columns,
            values,
            keys,
            encoded_values: Encoded::default(),
            encoded_keys: Encoded::default(),
            envelope: Vec::with_capacity(512),
            stats,
            trouble: Trouble::default(),
        })
    }

    /// Waits until the broker has every queued record; fails if it refused any.
    fn flush(&mut self) -> EngineResult<()> {
        let started = Instant::now();
        loop {
            match self.producer.flush(FLUSH_WAIT) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    let error = self.producer.context().error.lock().clone();
                    *self.trouble.lock() = Some(format!(
                        "waiting {} s for the broker to take the records of topic \"{}\": {}",
                        started.elapsed().as_secs(),
                        self.options.topic,
                        error.as_deref().unwrap_or("no answer")
                    ));
                    tracing::warn!(
                        topic = %self.options.topic,
                        waited = ?started.elapsed(),
                        error = error.as_deref().unwrap_or("none"),
                        "kafka sink waits for the broker"
                    );
                }
                Err(e) => return Err(external(e)),
            }
        }
        *self.trouble.lock() = None;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let error = self.producer.context().error.lock().take();
            return Err(external(format!(
                "the broker refused {failed} records of topic \"{}\": {}",
                self.options.topic,
                error.unwrap_or_default()
            )));
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!(
            "kafka {} ({}, {})",
            self.options.topic,
            self.options.format.name(),
            self.options.guarantee.name()
        )
    }

    fn recover(&mut self, epoch: u64, _recorded: Option<&[u8]>) -> EngineResult<()> {
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn write(&mut self, _epoch: u64, changes: &ChangeBatch) -> EngineResult<()> {
        let data = &changes.data;
        self.encoded_values
            .fill(&self.values, data)
            .map_err(external)?;
        let keyed = !self.key_columns.is_empty();
        if keyed {
            let keys = data.project(&self.key_columns)?;
            self.encoded_keys
                .fill(&self.keys, &keys)
                .map_err(external)?;
        }
        let (values, keys) = (&self.encoded_values, &self.encoded_keys);
        let key = |i: usize| keyed.then(|| keys.row(i));
        let mut out = Out {
            producer: &self.producer,
            topic: &self.options.topic,
            fixed: self.options.partitioner == Partitioner::Fixed,
            stats: &mut self.stats,
        };
        let envelope = &mut self.envelope;
        let ops = &changes.ops;
        let mut i = 0;
        while i < ops.len() {
            let paired = ops[i] == Op::UpdateBefore && ops.get(i + 1) == Some(&Op::UpdateAfter);
            match (self.options.format, ops[i]) {
                (SinkFormat::Plain, Op::Insert) => out.send(key(i), Some(values.row(i)))?,
                (SinkFormat::Plain, Op::UpdateAfter) if self.options.force_append_only => {
                    out.send(key(i), Some(values.row(i)))?
                }
                (SinkFormat::Plain, _) => {}
                (SinkFormat::Upsert, op) if op.is_add() => out.send(key(i), Some(values.row(i)))?,
                (SinkFormat::Upsert, Op::UpdateBefore) if paired && key(i) == key(i + 1) => {}
                (SinkFormat::Upsert, _) => out.send(key(i), None)?,
                (SinkFormat::Debezium, op) => {
                    let (before, after, op) = match op {
                        Op::UpdateBefore if paired => (Some(i), Some(i + 1), "u"),
                        op if op.is_add() => (None, Some(i), "c"),
                        _ => (Some(i), None, "d"),
                    };
                    debezium(envelope, values, before, after, op);
                    out.send(key(after.unwrap_or(i)), Some(envelope))?;
                    if op == "u" {
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64, _batch: &mut StateBatch) -> EngineResult<Option<Vec<u8>>> {
        match self.options.guarantee {
            Guarantee::None => self.producer.poll(Duration::ZERO),
            _ => self.flush()?,
        }
        self.stats.open = Some(epoch);
        Ok(None)
    }

    fn commit(&mut self, epoch: u64) -> EngineResult<()> {
        self.stats.committed_epoch = epoch;
        self.stats.open = None;
        Ok(())
    }

    fn external(&self) -> bool {
        // At-least-once tolerates an epoch written again after RocksDB lost it with the machine:
        // the epoch's records are replayed, never lost. Only a transactional sink would need
        // the synced checkpoint.
        self.options.guarantee == Guarantee::ExactlyOnce
    }

    fn stats(&self) -> SinkStats {
        self.stats.clone()
    }

    fn trouble(&self) -> Option<Trouble> {
        Some(std::sync::Arc::clone(&self.trouble))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: &[(&str, &str)] = &[
        ("connector", "kafka"),
        ("topic", "out"),
        ("properties.bootstrap.server", "127.0.0.1:9"),
    ];

    fn parse(extra: &[(&str, &str)]) -> Result<KafkaSinkOptions, ConnectorError> {
        let mut o = opts(BASE);
        o.extend(opts(extra));
        KafkaSinkOptions::parse(&o)
    }

    #[test]
    fn risingwave_and_flink_spellings() {
        let rw = parse(&[
            ("format", "upsert"),
            ("encode", "json"),
            ("primary_key", "k"),
        ])
        .unwrap();
        assert_eq!(
            (rw.format, rw.key.as_slice()),
            (SinkFormat::Upsert, &["k".to_string()][..])
        );
        let flink = parse(&[("format", "debezium-json")]).unwrap();
        assert_eq!(flink.format, SinkFormat::Debezium);
        let csv = parse(&[("format", "csv"), ("sink.delivery-guarantee", "none")]).unwrap();
        assert_eq!(
            (csv.format, csv.guarantee),
            (SinkFormat::Plain, Guarantee::None)
        );
        let mut upsert = opts(BASE);
        upsert.extend(opts(&[
            ("connector", "upsert-kafka"),
            ("value.format", "json"),
            ("key.format", "csv"),
            ("primary_key", "a;b"),
        ]));
        let u = KafkaSinkOptions::parse(&upsert).unwrap();
        assert_eq!(u.format, SinkFormat::Upsert);
        assert_eq!(u.key_format, RowFormat::Csv { delimiter: b',' });
        assert_eq!(u.key_columns(&["b".into(), "a".into()]).unwrap(), [1, 0]);
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let err = |extra: &[(&str, &str)]| parse(extra).unwrap_err().to_string();
        assert!(err(&[]).contains("needs a format"));
        assert!(err(&[("format", "upsert"), ("encode", "json")]).contains("primary_key"));
        assert!(err(&[("format", "avro")]).contains("\"avro\" is not supported"));
        assert!(err(&[("format", "json"), ("sink.delivery-guarantee", "twice")]).contains("twice"));
        assert!(
            err(&[
                ("format", "upsert"),
                ("encode", "json"),
                ("primary_key", "k"),
                ("force_append_only", "true")
            ])
            .contains("FORMAT PLAIN")
        );
        assert!(
            parse(&[("format", "json"), ("primary_key", "nope")])
                .unwrap()
                .key_columns(&["a".into()])
                .unwrap_err()
                .to_string()
                .contains("\"nope\"")
        );
    }
}
