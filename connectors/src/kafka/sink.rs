//! The Kafka sink: a job's changes as records of one topic, flushed at every barrier.
//!
//! Options, parsed once into [`KafkaSinkOptions`], in RisingWave's spelling (`CREATE SINK ... WITH
//! (connector = 'kafka', topic, properties.bootstrap.server, primary_key) FORMAT PLAIN | UPSERT |
//! DEBEZIUM ENCODE JSON [(force_append_only = 'true')]`) and Flink's (`'connector' = 'kafka' |
//! 'upsert-kafka'`, `'format'` / `'value.format'` = `json` | `csv` | `debezium-json`,
//! `'key.format'`, `'key.fields'`, `'sink.delivery-guarantee'`, `'sink.transactional-id-prefix'`,
//! `'sink.partitioner'` = `default` | `fixed` | `round-robin`, `'sink.auto-create'` with
//! `'sink.auto-create.partitions'`); every other `properties.*` option goes to librdkafka as it
//! is. A Flink sink table's metadata columns are written as record metadata, not in the value:
//! `ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'` is the record's timestamp (else the producer's
//! clock), `h STRING METADATA FROM 'headers'` a JSON object of its headers (text values), the
//! form a Kafka source table reads them in.
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
//!
//! Without `'sink.delivery-guarantee'`, CREATE asks the broker (`probe_transactions`):
//! exactly-once where it commits transactions, else at-least-once.
//!
//! Exactly-once (`'sink.delivery-guarantee' = 'exactly-once'`) puts each epoch's records in one
//! Kafka transaction of the sink's transactional id (`<sink.transactional-id-prefix>-<sink id>`,
//! the prefix `rivulet-<sink name>` by default), two-phase with the checkpoint:
//! - the transaction begins with the epoch's first batch; pre-commit waits for every record to be
//!   acknowledged and records where one of them is (partition and offset), which the checkpoint
//!   stores; the commit, once the checkpoint is synced, commits the transaction;
//! - after a crash, [`KafkaSink::recover`] finishes the transaction of the last checkpointed
//!   epoch: the record it located names the producer id and epoch, and `EndTxn` commits it
//!   ([`super::wire`]; librdkafka cannot resume another producer's transaction). Committing one
//!   already committed is harmless. Only then does the new producer initialise, which fences the
//!   crashed one and aborts what it wrote after that checkpoint, while the sources replay it;
//! - a reader with `isolation.level = read_committed` sees every record once. A transaction the
//!   broker aborted by its timeout before a restarted server could commit it is lost: the
//!   transaction timeout (`properties.transaction.timeout.ms`, 15 minutes by default, the most a
//!   default broker allows) bounds how long a server may stay down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
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
    /// Records to the topic's partitions in turn.
    RoundRobin,
}

/// Record metadata a sink table's column holds (Flink's writable Kafka metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMetadata {
    Timestamp,
    Headers,
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
    /// The options name the guarantee (else CREATE chooses it: [`Self::probe_transactions`]).
    pub guarantee_given: bool,
    pub transactional_id_prefix: Option<String>,
    pub partitioner: Partitioner,
    /// Columns written as record metadata (Flink's `METADATA FROM`), by name.
    pub metadata: Vec<(String, SinkMetadata)>,
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
            Some("round-robin") => Partitioner::RoundRobin,
            Some(other) => {
                return Err(bad(format!(
                    "invalid sink.partitioner \"{other}\": default, fixed or round-robin expected"
                )));
            }
        };
        let mut metadata = Vec::new();
        for (k, v) in options {
            let Some(column) = k.strip_prefix("metadata.") else {
                continue;
            };
            let m = match v.to_lowercase().as_str() {
                "timestamp" => SinkMetadata::Timestamp,
                "headers" => SinkMetadata::Headers,
                other => {
                    return Err(bad(format!(
                        "metadata \"{other}\" of column \"{column}\" cannot be written by a kafka \
                         sink (timestamp, headers)"
                    )));
                }
            };
            if metadata.iter().any(|(_, n)| *n == m) {
                return Err(bad(format!("two columns hold metadata \"{v}\"")));
            }
            metadata.push((column.to_string(), m));
        }
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
        let transactional_id_prefix = match options.get("sink.transactional-id-prefix") {
            Some(p) if p.trim().is_empty() => {
                return Err(bad(format!(
                    "invalid sink.transactional-id-prefix \"{p}\": a non-empty name expected"
                )));
            }
            p => p.map(|p| p.trim().to_string()),
        };
        if guarantee == Guarantee::ExactlyOnce {
            if options.contains_key("properties.transactional.id") {
                return Err(bad("the kafka sink sets transactional.id itself: use \
                     'sink.transactional-id-prefix'"
                    .into()));
            }
            if lower("properties.enable.idempotence").as_deref() == Some("false") {
                return Err(bad("sink.delivery-guarantee 'exactly-once' needs \
                     properties.enable.idempotence (Kafka transactions are idempotent)"
                    .into()));
            }
        }
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
        if guarantee == Guarantee::ExactlyOnce {
            if config.get("transaction.timeout.ms").is_none() {
                config.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
            }
            // librdkafka wants records to time out within their transaction's timeout.
            if config.get("message.timeout.ms").is_none() {
                let txn = config
                    .get("transaction.timeout.ms")
                    .unwrap_or(TRANSACTION_TIMEOUT_MS);
                config.set("message.timeout.ms", txn.to_string());
            }
        } else if config.get("message.timeout.ms").is_none() {
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
            guarantee_given: options.contains_key("sink.delivery-guarantee"),
            transactional_id_prefix,
            partitioner,
            metadata,
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

    /// Whether the broker commits Kafka transactions, tried with one that touches no topic: a
    /// producer with transactional id `rivulet-probe-<topic>` commits the offset of partition 0
    /// of the topic for consumer group `rivulet-probe` (an entry in the broker's offsets, which
    /// it expires like any group's). A broker that refuses any step (Tansu refuses `EndTxn`)
    /// does not. May block for up to about 30 s on a broker that does not answer.
    pub fn probe_transactions(&self) -> bool {
        let attempt = || -> Result<(), String> {
            let mut config = self.config.clone();
            config.set("transactional.id", format!("rivulet-probe-{}", self.topic));
            config.set("transaction.timeout.ms", "60000");
            config.set("message.timeout.ms", "60000");
            let producer: BaseProducer = config.create().map_err(|e| e.to_string())?;
            let wait = Duration::from_secs(10);
            producer
                .init_transactions(wait)
                .map_err(|e| e.to_string())?;
            producer.begin_transaction().map_err(|e| e.to_string())?;
            let group: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .set("group.id", "rivulet-probe")
                .set("log_level", "3")
                .create()
                .map_err(|e| e.to_string())?;
            let metadata = group
                .group_metadata()
                .ok_or_else(|| "no consumer group metadata".to_string())?;
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset(&self.topic, 0, Offset::Offset(0))
                .map_err(|e| e.to_string())?;
            let sent = producer.send_offsets_to_transaction(&offsets, &metadata, wait);
            if let Err(e) = sent.and_then(|()| producer.commit_transaction(wait)) {
                let _ = producer.abort_transaction(wait);
                return Err(e.to_string());
            }
            Ok(())
        };
        match attempt() {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(
                    broker = %self.bootstrap, error = %e,
                    "the broker does not commit transactions: the kafka sink is at-least-once"
                );
                false
            }
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

/// An exactly-once sink's transaction timeout unless the options set one: 15 minutes, the
/// most a broker allows by default (`transaction.max.timeout.ms`).
const TRANSACTION_TIMEOUT_MS: &str = "900000";

/// The producer's context: counts records the broker refused, keeps the last client error and
/// where the first record acknowledged since [`Delivery::located`] was taken went.
#[derive(Default)]
pub struct Delivery {
    failed: AtomicU64,
    error: Mutex<Option<String>>,
    /// The first acknowledged record's offset plus one (0: none yet), and its partition: one
    /// atomic load per acknowledged record, no lock.
    first_offset: AtomicI64,
    first_partition: AtomicI32,
}

impl Delivery {
    /// Where a record acknowledged since the last call went (partition, offset), if any.
    fn located(&self) -> Option<(i32, i64)> {
        let offset = self.first_offset.swap(0, Ordering::Acquire);
        (offset > 0).then(|| (self.first_partition.load(Ordering::Relaxed), offset - 1))
    }
}

impl ClientContext for Delivery {
    fn error(&self, error: KafkaError, reason: &str) {
        *self.error.lock() = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self.error.lock() = Some(e.to_string());
            }
            Ok(m) => {
                if self.first_offset.load(Ordering::Relaxed) == 0 {
                    self.first_partition.store(m.partition(), Ordering::Relaxed);
                    self.first_offset.store(m.offset() + 1, Ordering::Release);
                }
            }
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
    partitioner: Partitioner,
    /// Round-robin: the topic's partitions, and the next one.
    partitions: i32,
    next: &'a mut i32,
    meta: &'a RowMetadata,
    stats: &'a mut SinkStats,
}

/// A batch's record metadata, per row: timestamps (ms) and headers, where columns hold them.
#[derive(Default)]
struct RowMetadata {
    timestamps: Option<Int64Array>,
    headers: Option<StringArray>,
}

impl RowMetadata {
    /// Reads the metadata columns of `data` (`timestamp`, `headers`: their positions).
    fn of(
        data: &RecordBatch,
        timestamp: Option<usize>,
        headers: Option<usize>,
    ) -> EngineResult<Self> {
        let timestamps = match timestamp {
            None => None,
            Some(i) => {
                let column = data.column(i);
                let millis = match column.data_type() {
                    DataType::Int64 => Arc::clone(column),
                    _ => cast(
                        &cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
                        &DataType::Int64,
                    )?,
                };
                Some(millis.as_primitive::<Int64Type>().clone())
            }
        };
        let headers = match headers {
            None => None,
            Some(i) => Some(
                cast(data.column(i), &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone(),
            ),
        };
        Ok(Self {
            timestamps,
            headers,
        })
    }

    fn timestamp(&self, row: usize) -> Option<i64> {
        let t = self.timestamps.as_ref()?;
        t.is_valid(row).then(|| t.value(row))
    }

    /// Row `row`'s headers: a JSON object of text (or null) values; anything else is an error.
    fn headers(&self, row: usize) -> EngineResult<Option<OwnedHeaders>> {
        let Some(h) = self.headers.as_ref().filter(|h| h.is_valid(row)) else {
            return Ok(None);
        };
        let text = h.value(row);
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| external(format!("headers {text:?} are not a JSON object: {e}")))?;
        let mut out = OwnedHeaders::new_with_capacity(parsed.len());
        for (key, value) in &parsed {
            let value = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            out = out.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        Ok(Some(out))
    }
}

impl Out<'_> {
    /// Queues the record of row `row`, serving librdkafka's callbacks while its queue is full.
    fn send(&mut self, row: usize, key: Option<&[u8]>, value: Option<&[u8]>) -> EngineResult<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        match self.partitioner {
            Partitioner::Default => {}
            Partitioner::Fixed => record = record.partition(0),
            Partitioner::RoundRobin => {
                record = record.partition(*self.next);
                *self.next = (*self.next + 1) % self.partitions.max(1);
            }
        }
        if let Some(t) = self.meta.timestamp(row) {
            record = record.timestamp(t);
        }
        if let Some(h) = self.meta.headers(row)? {
            record = record.headers(h);
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
    /// One producer; exactly-once: one per transactional id, epochs taking turns ([`SLOTS`]).
    producers: Vec<BaseProducer<Delivery>>,
    /// The producer of the transaction open or last committed.
    slot: usize,
    /// The columns records carry as their value (all but the metadata columns), and where the
    /// metadata columns are.
    value_columns: Option<Vec<usize>>,
    timestamp_column: Option<usize>,
    headers_column: Option<usize>,
    /// Round-robin: the topic's partitions (0 until first asked), and the next one.
    partitions: i32,
    next_partition: i32,
    key_columns: Vec<usize>,
    values: RowEncoder,
    keys: RowEncoder,
    encoded_values: Encoded,
    encoded_keys: Encoded,
    envelope: Vec<u8>,
    stats: SinkStats,
    /// What the barrier waits for, while the broker does not acknowledge.
    trouble: Trouble,
    /// Exactly-once: the producers' transactional ids (else empty), and whether the current
    /// producer has a transaction open.
    transactional_ids: Vec<String>,
    in_transaction: bool,
}

/// An exactly-once sink's transactional ids, taking turns: each transaction begins on the
/// producer the previous one did not use. A producer keeps its id and epoch from one
/// transaction to the next, so `EndTxn` with them commits whichever transaction it has open.
/// Taking turns, the producer of the last checkpointed transaction has no later one open: the
/// only transaction that can have begun after it is on the other producer, and the one after
/// that begins only once that one is committed, so checkpointed, so the last.
const SLOTS: usize = 2;

/// What an exactly-once sink's checkpoint records of the epoch's transaction: the producer
/// (slot) that has it open, and where one of its records is, which names that producer's id and
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Located {
    slot: u8,
    partition: i32,
    offset: i64,
}

impl Located {
    const VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14);
        out.push(Self::VERSION);
        out.push(self.slot);
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> EngineResult<Self> {
        match bytes {
            [Self::VERSION, slot, p @ ..] if p.len() == 12 && usize::from(*slot) < SLOTS => {
                Ok(Self {
                    slot: *slot,
                    partition: i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                    offset: i64::from_le_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]),
                })
            }
            _ => Err(EngineError::Internal(format!(
                "a kafka sink's checkpoint records {} bytes it cannot read",
                bytes.len()
            ))),
        }
    }
}

/// How long one transactional call waits before the sink reports trouble and calls again.
const TRANSACTION_WAIT: Duration = Duration::from_secs(10);

fn external(e: impl std::fmt::Display) -> EngineError {
    EngineError::External {
        system: "kafka sink".into(),
        message: e.to_string(),
    }
}

impl KafkaSink {
    /// Sink `name` (catalog id `id`) of rows whose columns are `columns` (the names records
    /// carry).
    pub fn new(
        id: u64,
        name: &str,
        options: KafkaSinkOptions,
        columns: &[String],
    ) -> Result<Self, ConnectorError> {
        let transactional_ids: Vec<String> = match options.guarantee {
            Guarantee::ExactlyOnce => {
                let prefix = options
                    .transactional_id_prefix
                    .clone()
                    .unwrap_or_else(|| format!("rivulet-{name}"));
                (0..SLOTS)
                    .map(|slot| format!("{prefix}-{id}-{slot}"))
                    .collect()
            }
            _ => Vec::new(),
        };
        let key_columns = options.key_columns(columns)?;
        let key_names: Vec<String> = key_columns.iter().map(|&i| columns[i].clone()).collect();
        let position = |name: &str| {
            columns.iter().position(|c| c == name).ok_or_else(|| {
                ConnectorError::Option(format!("metadata column \"{name}\" is not a column"))
            })
        };
        let mut timestamp_column = None;
        let mut headers_column = None;
        for (column, m) in &options.metadata {
            match m {
                SinkMetadata::Timestamp => timestamp_column = Some(position(column)?),
                SinkMetadata::Headers => headers_column = Some(position(column)?),
            }
        }
        let value_columns = (!options.metadata.is_empty()).then(|| {
            (0..columns.len())
                .filter(|i| Some(*i) != timestamp_column && Some(*i) != headers_column)
                .collect::<Vec<_>>()
        });
        let value_names: Vec<String> = match &value_columns {
            Some(v) => v.iter().map(|&i| columns[i].clone()).collect(),
            None => columns.to_vec(),
        };
        let values = RowEncoder::new(options.value_format.clone(), &options.options)?
            .with_names(&value_names);
        let keys =
            RowEncoder::new(options.key_format.clone(), &options.options)?.with_names(&key_names);
        let create = |transactional_id: Option<&String>| {
            let mut config = options.config.clone();
            if let Some(t) = transactional_id {
                config.set("transactional.id", t);
            }
            config
                .create_with_context::<_, BaseProducer<Delivery>>(Delivery::default())
                .map_err(|e| ConnectorError::Option(format!("kafka sink: {e}")))
        };
        let producers = if transactional_ids.is_empty() {
            vec![create(None)?]
        } else {
            transactional_ids
                .iter()
                .map(|t| create(Some(t)))
                .collect::<Result<_, _>>()?
        };
        let stats = SinkStats {
            connector: "kafka".into(),
            target: options.topic.clone(),
            guarantee: options.guarantee.name().into(),
            ..SinkStats::default()
        };
        Ok(Self {
            options,
            producers,
            slot: 0,
            value_columns,
            timestamp_column,
            headers_column,
            partitions: 0,
            next_partition: 0,
            key_columns,
            values,
            keys,
            encoded_values: Encoded::default(),
            encoded_keys: Encoded::default(),
            envelope: Vec::with_capacity(512),
            stats,
            trouble: Trouble::default(),
            transactional_ids,
            in_transaction: false,
        })
    }

    /// Calls the transactional operation `what` until it succeeds, reporting the trouble while
    /// the broker does not answer; fails on an error that retrying cannot fix.
    fn transact(
        &mut self,
        slot: usize,
        what: &str,
        mut call: impl FnMut(&BaseProducer<Delivery>) -> Result<(), KafkaError>,
    ) -> EngineResult<()> {
        let started = Instant::now();
        loop {
            match call(&self.producers[slot]) {
                Ok(()) => {
                    *self.trouble.lock() = None;
                    return Ok(());
                }
                Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                    self.stats.retries += 1;
                    *self.trouble.lock() = Some(format!(
                        "waiting {} s to {what} on the broker: {e}",
                        started.elapsed().as_secs()
                    ));
                    tracing::warn!(topic = %self.options.topic, %e, what, "kafka sink retries");
                }
                Err(e) => return Err(external(format!("{what}: {e}"))),
            }
        }
    }

    /// Finishes the transaction the checkpoint of `epoch` recorded (`located`): commits it with
    /// the producer that wrote it, unless that already happened.
    fn finish_recorded(&mut self, epoch: u64, located: &Located, transactional_id: &str) {
        let cluster = super::wire::Cluster::new(&self.options.bootstrap);
        let started = Instant::now();
        let topic = &self.options.topic;
        loop {
            let attempt = cluster
                .producer_of(topic, located.partition, located.offset)
                .and_then(|producer| {
                    cluster
                        .end_transaction(transactional_id, producer, true)
                        .map(|r| (producer, r))
                });
            use kafka_protocol::error::ResponseError as E;
            match attempt {
                Ok((producer, Ok(()))) => {
                    tracing::info!(
                        topic = %topic, epoch, producer = ?producer,
                        "kafka sink committed the transaction of its last checkpoint"
                    );
                    break;
                }
                // A later producer has the id: it initialised after this commit succeeded.
                Ok((
                    _,
                    Err(E::ProducerFenced | E::InvalidProducerEpoch | E::InvalidProducerIdMapping),
                )) => {
                    break;
                }
                Ok((producer, Err(e))) => {
                    tracing::error!(
                        topic = %topic, epoch, producer = ?producer, %e,
                        "kafka sink could not commit the transaction of its last checkpoint: \
                         the broker aborted it (transaction timeout?), its records are lost"
                    );
                    break;
                }
                Err(e) => {
                    self.stats.retries += 1;
                    *self.trouble.lock() = Some(format!(
                        "waiting {} s to commit the transaction of epoch {epoch}: {e}",
                        started.elapsed().as_secs()
                    ));
                    tracing::warn!(topic = %topic, epoch, %e, "kafka sink retries its recovery");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        *self.trouble.lock() = None;
    }

    /// The topic's partitions, as the broker's metadata says.
    fn partition_count(&self) -> EngineResult<i32> {
        let metadata = self
            .producer()
            .client()
            .fetch_metadata(Some(&self.options.topic), Duration::from_secs(10))
            .map_err(external)?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.options.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(external(format!(
                "topic \"{}\" has no partitions",
                self.options.topic
            )));
        }
        Ok(n)
    }

    fn producer(&self) -> &BaseProducer<Delivery> {
        &self.producers[self.slot]
    }

    /// Waits until the broker has every queued record; fails if it refused any.
    fn flush(&mut self) -> EngineResult<()> {
        let started = Instant::now();
        loop {
            match self.producer().flush(FLUSH_WAIT) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    self.stats.retries += 1;
                    let error = self.producer().context().error.lock().clone();
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
        let failed = self.producer().context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let error = self.producer().context().error.lock().take();
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

    fn recover(&mut self, epoch: u64, recorded: Option<&[u8]>) -> EngineResult<()> {
        if !self.transactional_ids.is_empty() {
            // The next transaction begins on the other producer.
            self.slot = SLOTS - 1;
            if let Some(recorded) = recorded {
                let located = Located::decode(recorded)?;
                self.slot = usize::from(located.slot);
                let id = self.transactional_ids[self.slot].clone();
                self.finish_recorded(epoch, &located, &id);
            }
            // Fences the producers of an earlier run and aborts what they left open.
            for slot in 0..self.producers.len() {
                self.transact(slot, "initialise transactions", |p| {
                    p.init_transactions(TRANSACTION_WAIT)
                })?;
            }
        }
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn write(&mut self, _epoch: u64, changes: &ChangeBatch) -> EngineResult<()> {
        if !self.transactional_ids.is_empty() && !self.in_transaction {
            self.slot = (self.slot + 1) % SLOTS;
            self.producer().begin_transaction().map_err(external)?;
            self.producer().context().located();
            self.in_transaction = true;
            self.stats.transaction = Some(self.transactional_ids[self.slot].clone());
            self.stats.open_since = Some(std::time::SystemTime::now());
        }
        let data = &changes.data;
        match &self.value_columns {
            Some(v) => self.encoded_values.fill(&self.values, &data.project(v)?),
            None => self.encoded_values.fill(&self.values, data),
        }
        .map_err(external)?;
        let meta = RowMetadata::of(data, self.timestamp_column, self.headers_column)?;
        if self.options.partitioner == Partitioner::RoundRobin && self.partitions == 0 {
            self.partitions = self.partition_count()?;
        }
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
            producer: &self.producers[self.slot],
            topic: &self.options.topic,
            partitioner: self.options.partitioner,
            partitions: self.partitions,
            next: &mut self.next_partition,
            meta: &meta,
            stats: &mut self.stats,
        };
        let envelope = &mut self.envelope;
        let ops = &changes.ops;
        let mut i = 0;
        while i < ops.len() {
            let paired = ops[i] == Op::UpdateBefore && ops.get(i + 1) == Some(&Op::UpdateAfter);
            match (self.options.format, ops[i]) {
                (SinkFormat::Plain, Op::Insert) => out.send(i, key(i), Some(values.row(i)))?,
                (SinkFormat::Plain, Op::UpdateAfter) if self.options.force_append_only => {
                    out.send(i, key(i), Some(values.row(i)))?
                }
                (SinkFormat::Plain, _) => {}
                (SinkFormat::Upsert, op) if op.is_add() => {
                    out.send(i, key(i), Some(values.row(i)))?
                }
                (SinkFormat::Upsert, Op::UpdateBefore) if paired && key(i) == key(i + 1) => {}
                (SinkFormat::Upsert, _) => out.send(i, key(i), None)?,
                (SinkFormat::Debezium, op) => {
                    let (before, after, op) = match op {
                        Op::UpdateBefore if paired => (Some(i), Some(i + 1), "u"),
                        op if op.is_add() => (None, Some(i), "c"),
                        _ => (Some(i), None, "d"),
                    };
                    debezium(envelope, values, before, after, op);
                    let row = after.unwrap_or(i);
                    out.send(row, key(row), Some(envelope))?;
                    if op == "u" {
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        self.producer().poll(Duration::ZERO);
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64, _batch: &mut StateBatch) -> EngineResult<Option<Vec<u8>>> {
        match self.options.guarantee {
            Guarantee::None => self.producer().poll(Duration::ZERO),
            _ => self.flush()?,
        }
        self.stats.open = Some(epoch);
        if !self.in_transaction {
            return Ok(None);
        }
        // An epoch that produced nothing has nothing for a recovery to commit.
        Ok(self
            .producer()
            .context()
            .located()
            .map(|(partition, offset)| {
                Located {
                    slot: self.slot as u8,
                    partition,
                    offset,
                }
                .encode()
            }))
    }

    fn commit(&mut self, epoch: u64) -> EngineResult<()> {
        if self.in_transaction {
            self.transact(self.slot, "commit the transaction", |p| {
                p.commit_transaction(TRANSACTION_WAIT)
            })?;
            self.in_transaction = false;
            self.stats.transaction = None;
            self.stats.open_since = None;
        }
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
