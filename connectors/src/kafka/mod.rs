//! The Kafka source (librdkafka through rdkafka): a table over one or more topics, read by the
//! jobs that use it, with every partition's offset in their checkpoints.
//!
//! Options, in Flink's spelling and RisingWave's:
//! - `topic` (a `;`-separated list in Flink), `properties.bootstrap.servers` (RisingWave:
//!   `properties.bootstrap.server`), `properties.group.id`; every other `properties.*` option is
//!   passed to librdkafka as it is (`properties.isolation.level` = `read_committed`, say);
//! - `scan.startup.mode`: `earliest-offset` | `earliest`, `latest-offset` | `latest`,
//!   `group-offsets`, `timestamp` (with `scan.startup.timestamp-millis`, RisingWave's
//!   `scan.startup.timestamp.millis` alone also selects it), `specific-offsets` (with
//!   `scan.startup.specific-offsets` = `partition:0,offset:42;partition:1,offset:300`);
//! - `format` (`json`, `csv`, `raw`) or RisingWave's `FORMAT PLAIN ENCODE JSON | CSV | BYTES`.
//!
//! The source assigns partitions itself (as Flink does: no consumer-group rebalancing) and looks
//! for partitions added later every [`DISCOVERY`]; a new partition is read from its beginning.
//! Start offsets are resolved to numbers when a reader first reaches the broker, so a job's
//! position is always each partition's next offset. The progress FLUSH compares is their sum;
//! the end it waits for is the sum of the high watermarks.
//!
//! Records are polled in rounds of up to [`BATCH_RECORDS`], grouped by partition (a split, with
//! its own watermark) and decoded columnar per partition ([`crate::format`]). A record that does
//! not decode is a dead letter (topic and partition, offset, its bytes, the error), released
//! with its partition's rows, so that a checkpoint holds it exactly when it holds the offset
//! past it. A broker that cannot be reached is retried with backoff: the reader reports the
//! trouble (SHOW JOBS shows it) and returns no rows meanwhile.

/// The Kafka sink: a job's changes as records of one topic.
pub mod sink;
/// Kafka requests spoken directly: ending a crashed producer's transaction, raw batches.
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::array::{RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::{cast, interleave, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rivulet_engine::job::graph::{ExternalBatch, ExternalReader, ExternalSource};
use rivulet_engine::job::metrics::SplitStatus;
use rivulet_engine::operator::DeadLetter;
use rivulet_engine::state::{StateBatch, StateStore};
use rivulet_engine::table::TableStore;
use rivulet_engine::{EngineError, Result as EngineResult};

use crate::ConnectorError;
use crate::format::{DebeziumDecoder, Encoding, RecordDecoder};

/// Records polled in one round at most.
pub const BATCH_RECORDS: usize = 8192;
/// How long a read waits for the first record of a round.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// How often a reader looks for partitions added to its topics.
const DISCOVERY: Duration = Duration::from_secs(5);
/// Broker requests (metadata, offsets) give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays after a failure to reach the broker: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// An ad-hoc read fails after this long without records before the end it is reading to.
const BOUNDED_STALL: Duration = Duration::from_secs(30);
/// Splits of one topic: a split id is the topic's index in the list times this, plus the
/// partition.
const SPLITS_PER_TOPIC: u32 = 1 << 20;

/// A Kafka record's metadata, as a column (Flink's `METADATA FROM`, RisingWave's `INCLUDE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Headers,
}

impl Metadata {
    /// The metadata a Flink key (`'partition'`, `'timestamp'`...) or RisingWave `INCLUDE` word
    /// names.
    pub fn parse(name: &str) -> Option<Metadata> {
        Some(match name.to_lowercase().as_str() {
            "topic" => Metadata::Topic,
            "partition" => Metadata::Partition,
            "offset" => Metadata::Offset,
            "timestamp" => Metadata::Timestamp,
            "key" => Metadata::Key,
            "headers" | "header" => Metadata::Headers,
            _ => return None,
        })
    }
}

/// A consumer's context: keeps the last client-level error librdkafka reports (a broker that
/// cannot be reached, say), which no poll returns.
#[derive(Default)]
pub struct Trouble(Mutex<Option<String>>);

impl ClientContext for Trouble {
    fn error(&self, error: KafkaError, reason: &str) {
        *self.0.lock() = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Trouble {}

type Client = BaseConsumer<Trouble>;

/// Where a table's column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnFrom {
    /// The decoded value's column at this index.
    Value(usize),
    Meta(Metadata),
}

/// How records change the table.
#[derive(Debug, Clone)]
enum Changelog {
    /// Every record is a new row (an append-only table, read by the jobs themselves).
    Plain,
    /// Flink's `upsert-kafka`, RisingWave's `FORMAT UPSERT`: a record's value replaces the row
    /// with its key; a record without a value deletes it. `key` decodes a record key into the
    /// key columns (`key_columns`: their indexes among the value's columns); `None` when the
    /// key is a metadata column itself (RisingWave's `INCLUDE key AS k ... PRIMARY KEY (k)`).
    Upsert {
        key: Option<RecordDecoder>,
        key_columns: Vec<usize>,
    },
    /// Debezium JSON: inserts, updates and deletes of a table with a primary key.
    Debezium(DebeziumDecoder),
}

/// Where reading starts when a job has no position yet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Startup {
    Earliest,
    Latest,
    /// The group's committed offsets (earliest where it has none).
    Group,
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    /// Per partition of the first topic; others from the earliest.
    Specific(BTreeMap<i32, i64>),
}

/// A table over Kafka topics, as jobs read it (cheap to clone).
#[derive(Debug, Clone)]
pub struct KafkaSource(Arc<KafkaTable>);

/// A table over Kafka topics and how to decode their records.
pub struct KafkaTable {
    topics: Vec<String>,
    config: ClientConfig,
    startup: Startup,
    /// The table's stored columns (without computed ones).
    schema: SchemaRef,
    columns: Vec<ColumnFrom>,
    decoder: RecordDecoder,
    changelog: Changelog,
    /// A client for metadata and high watermarks (FLUSH, ad-hoc reads) and offset commits,
    /// made on first use.
    client: Mutex<Option<Arc<Client>>>,
    /// The position last committed to the group.
    committed: Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for KafkaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTable")
            .field("topics", &self.topics)
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

fn option<'a>(options: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a String> {
    names.iter().find_map(|n| options.get(*n))
}

/// An error's message without the "internal error" label: a broker or topic problem is the
/// user's to fix.
/// The brokers of `properties.bootstrap.servers` (RisingWave: `properties.bootstrap.server`);
/// `what` names the connector in the error.
pub(crate) fn bootstrap_servers<'a>(
    options: &'a BTreeMap<String, String>,
    what: &str,
) -> Result<&'a String, ConnectorError> {
    option(
        options,
        &[
            "properties.bootstrap.servers",
            "properties.bootstrap.server",
        ],
    )
    .ok_or_else(|| {
        ConnectorError::Option(format!(
            "the kafka {what} needs 'properties.bootstrap.servers' \
             (RisingWave: properties.bootstrap.server)"
        ))
    })
}

fn plain(e: &EngineError) -> String {
    match e {
        EngineError::Internal(m) => m.clone(),
        other => other.to_string(),
    }
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("kafka: {what}: {e}"))
}

impl KafkaSource {
    /// See [`KafkaTable::parse`].
    pub fn parse(
        schema: &SchemaRef,
        primary_key: &[usize],
        metadata: &[(usize, Metadata)],
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        KafkaTable::parse(schema, primary_key, metadata, options).map(|t| Self(Arc::new(t)))
    }

    /// Whether the table's records change rows by key (upsert, Debezium): such a table stores
    /// its rows, fed by [`ingest`], instead of being read by the jobs.
    pub fn is_changelog(&self) -> bool {
        !matches!(self.0.changelog, Changelog::Plain)
    }

    /// Fails, naming it, when a topic does not exist (or the broker cannot be reached).
    pub fn check_topics(&self) -> Result<(), ConnectorError> {
        self.0.check_topics()
    }
}

impl KafkaTable {
    /// Reads the options of a table `WITH (connector = 'kafka', ...)` whose stored columns are
    /// `schema`, with primary key `primary_key`; `metadata` names the columns that hold record
    /// metadata.
    pub fn parse(
        schema: &SchemaRef,
        primary_key: &[usize],
        metadata: &[(usize, Metadata)],
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let bad = |m: String| ConnectorError::Option(m);
        let topics: Vec<String> = option(options, &["topic", "topics"])
            .ok_or_else(|| bad("the kafka connector needs 'topic'".into()))?
            .split([';', ','])
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(bad("'topic' names no topic".into()));
        }
        let servers = bootstrap_servers(options, "connector")?;
        let mut config = ClientConfig::new();
        for (k, v) in options {
            if let Some(p) = k.strip_prefix("properties.") {
                let p = if p == "bootstrap.server" {
                    "bootstrap.servers"
                } else {
                    p
                };
                config.set(p, v);
            }
        }
        config.set("bootstrap.servers", servers);
        if let Some(level) = option(options, &["isolation.level"]) {
            config.set("isolation.level", level);
        }
        if config.get("group.id").is_none() {
            config.set("group.id", format!("rivulet-{}", topics.join("-")));
        }
        // Offsets are the checkpoint's business; committing them to the group is optional.
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("enable.partition.eof", "false");
        if config.get("auto.offset.reset").is_none() {
            config.set("auto.offset.reset", "earliest");
        }
        // A broker holds a fetch until data comes or this long: it bounds how late an idle
        // partition's first new record is seen (librdkafka's default is 500 ms).
        if config.get("fetch.wait.max.ms").is_none() {
            config.set("fetch.wait.max.ms", "50");
        }
        config.set("log_level", "3");

        let timestamp = option(
            options,
            &[
                "scan.startup.timestamp-millis",
                "scan.startup.timestamp.millis",
            ],
        )
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| bad(format!("invalid startup timestamp \"{t}\": milliseconds")))
        })
        .transpose()?;
        let mode = option(options, &["scan.startup.mode"]).map(|m| m.to_lowercase());
        let startup = match (mode.as_deref(), timestamp) {
            (None, Some(t)) | (Some("timestamp"), Some(t)) => Startup::Timestamp(t),
            (Some("timestamp"), None) => {
                return Err(bad(
                    "scan.startup.mode 'timestamp' needs scan.startup.timestamp-millis".into(),
                ));
            }
            (None | Some("earliest-offset" | "earliest"), _) => Startup::Earliest,
            (Some("latest-offset" | "latest"), _) => Startup::Latest,
            (Some("group-offsets" | "group_offsets"), _) => Startup::Group,
            (Some("specific-offsets"), _) => {
                let spec =
                    option(options, &["scan.startup.specific-offsets"]).ok_or_else(|| {
                        bad("scan.startup.mode 'specific-offsets' needs \
                         scan.startup.specific-offsets"
                            .into())
                    })?;
                Startup::Specific(parse_specific(spec).map_err(bad)?)
            }
            (Some(other), _) => {
                return Err(bad(format!(
                    "invalid scan.startup.mode \"{other}\": earliest-offset, latest-offset, \
                     group-offsets, timestamp or specific-offsets expected"
                )));
            }
        };

        let mut columns = Vec::with_capacity(schema.fields().len());
        let mut value_fields: Vec<Field> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            match metadata.iter().find(|(c, _)| *c == i) {
                Some((_, m)) => columns.push(ColumnFrom::Meta(*m)),
                None => {
                    columns.push(ColumnFrom::Value(value_fields.len()));
                    value_fields.push(f.as_ref().clone());
                }
            }
        }
        let lower = |k: &str| options.get(k).map(|v| v.to_lowercase()).unwrap_or_default();
        let upsert_kafka = lower("connector") == "upsert-kafka";
        let format = lower("format");
        let debezium = matches!(format.as_str(), "debezium" | "debezium-json")
            || lower("value.format") == "debezium-json";
        let upsert = upsert_kafka || format == "upsert";
        let value_prefix = if upsert_kafka { "value." } else { "" };
        let encoding = Encoding::from_options(options, value_prefix)
            .map_err(|e| bad(format!("{e} by the kafka connector (json, csv, raw)")))?
            .ok_or_else(|| {
                bad(
                    "the kafka connector needs 'format' = 'json', 'csv' or 'raw' \
                     (RisingWave: FORMAT PLAIN ENCODE JSON; upsert-kafka: 'value.format')"
                        .into(),
                )
            })?;
        let value_schema = Arc::new(Schema::new(value_fields));
        if (upsert || debezium) && primary_key.is_empty() {
            return Err(bad(format!(
                "a {} Kafka table needs a PRIMARY KEY: its records change rows by key",
                if upsert { "upsert" } else { "Debezium" }
            )));
        }
        let changelog = if debezium {
            if encoding != Encoding::Json {
                return Err(bad("Debezium records are read as JSON only".into()));
            }
            Changelog::Debezium(DebeziumDecoder::new(Arc::clone(&value_schema)))
        } else if upsert {
            // The key columns among the value's columns, where they are there.
            let key_columns: Vec<usize> = primary_key
                .iter()
                .filter_map(|&c| match columns.get(c) {
                    Some(ColumnFrom::Value(v)) => Some(*v),
                    _ => None,
                })
                .collect();
            let key = if key_columns.is_empty() {
                None
            } else {
                let key_encoding = Encoding::from_options(options, "key.")
                    .map_err(|e| bad(format!("key: {e}")))?
                    .unwrap_or(Encoding::Json);
                let fields: Vec<Field> = key_columns
                    .iter()
                    .map(|&v| value_schema.field(v).clone())
                    .collect();
                Some(
                    RecordDecoder::new(Arc::new(Schema::new(fields)), key_encoding)
                        .map_err(|e| bad(format!("key: {e}")))?,
                )
            };
            Changelog::Upsert { key, key_columns }
        } else {
            Changelog::Plain
        };
        let decoder = RecordDecoder::new(value_schema, encoding).map_err(bad)?;
        Ok(Self {
            topics,
            config,
            startup,
            schema: Arc::clone(schema),
            columns,
            decoder,
            changelog,
            client: Mutex::new(None),
            committed: Mutex::new(None),
        })
    }

    fn consumer(&self) -> EngineResult<Client> {
        self.config
            .create_with_context(Trouble::default())
            .map_err(|e| kafka_error("creating a consumer", e))
    }

    fn client(&self) -> EngineResult<Arc<Client>> {
        let mut client = self.client.lock();
        if let Some(c) = client.as_ref() {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.consumer()?);
        *client = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Fails, naming it, when a topic does not exist (or the broker cannot be reached).
    pub fn check_topics(&self) -> Result<(), ConnectorError> {
        let client = self.client()?;
        for t in &self.topics {
            partitions(&client, t).map_err(|e| ConnectorError::Option(plain(&e)))?;
        }
        Ok(())
    }

    /// Every partition of every topic, as (topic index, partition).
    fn splits(&self, client: &Client) -> EngineResult<Vec<(usize, i32)>> {
        let mut out = Vec::new();
        for (i, t) in self.topics.iter().enumerate() {
            out.extend(partitions(client, t)?.into_iter().map(|p| (i, p)));
        }
        Ok(out)
    }

    /// Where each of `splits` starts by the startup mode.
    fn start_offsets(
        &self,
        client: &Client,
        splits: &[(usize, i32)],
    ) -> EngineResult<BTreeMap<(usize, i32), i64>> {
        let mut out = BTreeMap::new();
        let low_high = |t: usize, p: i32| {
            client
                .fetch_watermarks(&self.topics[t], p, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(&format!("offsets of {}/{p}", self.topics[t]), e))
        };
        match &self.startup {
            Startup::Earliest | Startup::Latest => {
                for &(t, p) in splits {
                    let (low, high) = low_high(t, p)?;
                    let at = if self.startup == Startup::Latest {
                        high
                    } else {
                        low
                    };
                    out.insert((t, p), at);
                }
            }
            Startup::Specific(offsets) => {
                for &(t, p) in splits {
                    let given = (t == 0).then(|| offsets.get(&p).copied()).flatten();
                    let at = match given {
                        Some(o) => o,
                        None => low_high(t, p)?.0,
                    };
                    out.insert((t, p), at);
                }
            }
            Startup::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                for &(t, p) in splits {
                    tpl.add_partition_offset(&self.topics[t], p, Offset::Offset(*ms))
                        .map_err(|e| kafka_error("offsets by time", e))?;
                }
                let found = client
                    .offsets_for_times(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("offsets by time", e))?;
                for &(t, p) in splits {
                    let o = found.find_partition(&self.topics[t], p).map(|e| e.offset());
                    let at = match o {
                        Some(Offset::Offset(o)) => o,
                        // No record at or after the time: from the end.
                        _ => low_high(t, p)?.1,
                    };
                    out.insert((t, p), at);
                }
            }
            Startup::Group => {
                let mut tpl = TopicPartitionList::new();
                for &(t, p) in splits {
                    tpl.add_partition(&self.topics[t], p);
                }
                let committed = client
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("the group's committed offsets", e))?;
                for &(t, p) in splits {
                    let o = committed
                        .find_partition(&self.topics[t], p)
                        .map(|e| e.offset());
                    let at = match o {
                        Some(Offset::Offset(o)) => o,
                        _ => low_high(t, p)?.0,
                    };
                    out.insert((t, p), at);
                }
            }
        }
        Ok(out)
    }

    fn reader(
        self: &Arc<Self>,
        state: &[u8],
        bounded: bool,
    ) -> EngineResult<Box<dyn ExternalReader>> {
        let next = decode_state(state, &self.topics)
            .ok_or_else(|| EngineError::Corrupt("kafka source position".into()))?;
        Ok(Box::new(KafkaReader {
            source: Arc::clone(self),
            consumer: None,
            restored: !state.is_empty(),
            next,
            stop: None,
            bounded,
            discovered: Instant::now(),
            pending: VecDeque::new(),
            dead: Vec::new(),
            trouble: None,
            idle_since: Instant::now(),
            retry: None,
            ends: BTreeMap::new(),
        }))
    }
}

/// Feeds a changelog Kafka table (upsert, Debezium) from its topics: each batch of records is
/// applied to the table's rows by key together with the new position and the batch's dead
/// letters, in one atomic commit, so the table holds every record's effect exactly once after
/// any crash; views read the table's change log. Runs until the task is dropped.
pub async fn ingest(
    source: KafkaSource,
    store: StateStore,
    table: Arc<TableStore>,
) -> crate::Result<()> {
    let key = crate::position_key(table.id());
    let state = store.get(&key)?.unwrap_or_default();
    let reader = source.0.reader(&state, false)?;
    let mut reader = Some(reader);
    let mut dead_seq = match store.last_in_prefix(&crate::dead_prefix(table.id()))? {
        Some((k, _)) => k
            .get(k.len().saturating_sub(8)..)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .map_or(0, |n| n + 1),
        None => 0,
    };
    let mut last_trouble = None;
    loop {
        let Some(mut r) = reader.take() else {
            return Ok(());
        };
        let (table2, store2, key2) = (Arc::clone(&table), store.clone(), key.clone());
        let name = table.name().to_string();
        let (r, result) = tokio::task::spawn_blocking(move || {
            let result = (|| -> crate::Result<(bool, Option<String>, u64)> {
                let batch = r.next()?;
                let dead = r.take_dead_letters();
                let mut extra = StateBatch::new();
                extra.put(&key2, r.state());
                for d in &dead {
                    let mut k = crate::dead_prefix(table2.id());
                    k.extend_from_slice(&dead_seq.to_be_bytes());
                    dead_seq += 1;
                    extra.put(
                        k,
                        DeadLetter {
                            table: name.clone(),
                            ..d.clone()
                        }
                        .encode(),
                    );
                }
                let had = batch.is_some();
                match batch {
                    Some(b) => {
                        let deleted = b.deleted.unwrap_or_else(|| vec![false; b.rows.num_rows()]);
                        table2.upsert(&b.rows, &deleted, extra)?;
                    }
                    None if !dead.is_empty() => store2.write(extra, true)?,
                    None => {}
                }
                Ok((had, r.trouble(), dead_seq))
            })();
            (r, result)
        })
        .await
        .map_err(|e| ConnectorError::Option(format!("kafka source task: {e}")))?;
        reader = Some(r);
        let (had, trouble, seq) = result?;
        dead_seq = seq;
        if trouble != last_trouble {
            if let Some(t) = &trouble {
                tracing::warn!(table = %table.name(), error = %t, "kafka source retrying");
            }
            last_trouble = trouble;
        }
        if !had {
            tokio::task::yield_now().await;
        }
    }
}

/// The partitions of `topic`; an error names a topic that does not exist.
fn partitions(client: &Client, topic: &str) -> EngineResult<Vec<i32>> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| kafka_error("reaching the broker", e))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| kafka_error("metadata", format!("topic \"{topic}\" not found")))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(EngineError::Internal(format!(
            "kafka: topic \"{topic}\" does not exist"
        )));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// One partition's records of a poll round.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    /// Per record: its offset and where its value (a tombstone's key) is in `bytes`.
    records: Vec<(i64, std::ops::Range<usize>)>,
    /// Per record: it has no value (in an upsert table: it deletes its key).
    tombstones: Vec<bool>,
    timestamps: Vec<Option<i64>>,
    keys: Vec<Option<Vec<u8>>>,
    headers: Vec<Option<String>>,
    next: i64,
}

/// What a partition's records decode to.
#[derive(Default)]
struct Decoded {
    /// The rows, and the index of the record each comes from.
    rows: Option<(RecordBatch, Vec<u32>)>,
    /// For a changelog format: whether each row deletes its key.
    deleted: Option<Vec<bool>>,
    dead: Vec<DeadLetter>,
}

/// Rows, the records they come from, and the records that failed (index, error).
type Subset = (Option<RecordBatch>, Vec<u32>, Vec<(usize, String)>);

/// Decodes records `subset` of `g` with `decoder`: all at once, or one by one when that fails.
fn decode_subset(decoder: &RecordDecoder, g: &Group, subset: &[usize]) -> EngineResult<Subset> {
    if subset.is_empty() {
        return Ok((None, Vec::new(), Vec::new()));
    }
    let slice = |i: usize| &g.bytes[g.records[i].1.clone()];
    if let Encoding::Raw = decoder.encoding() {
        let slices: Vec<&[u8]> = subset.iter().map(|&i| slice(i)).collect();
        let (batch, bad) = decoder.decode_raw(&slices);
        let bad_set: std::collections::HashSet<usize> = bad.iter().map(|b| b.0).collect();
        let kept = (0..subset.len())
            .filter(|j| !bad_set.contains(j))
            .map(|j| subset[j] as u32)
            .collect();
        let bad = bad.into_iter().map(|(j, e)| (subset[j], e)).collect();
        return Ok((batch, kept, bad));
    }
    let contiguous = subset.len() == g.records.len();
    let joined;
    let bytes: &[u8] = if contiguous {
        &g.bytes
    } else {
        let mut b = Vec::new();
        for &i in subset {
            b.extend_from_slice(slice(i));
            b.push(b'\n');
        }
        joined = b;
        &joined
    };
    if let Ok(Some(batch)) = decoder.decode(bytes, subset.len())
        && batch.num_rows() == subset.len()
    {
        return Ok((
            Some(batch),
            subset.iter().map(|&i| i as u32).collect(),
            Vec::new(),
        ));
    }
    let (mut good, mut kept, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for &i in subset {
        let mut one = slice(i).to_vec();
        one.push(b'\n');
        match decoder.decode(&one, 1) {
            Ok(Some(b)) if b.num_rows() == 1 => {
                good.push(b);
                kept.push(i as u32);
            }
            Ok(_) => bad.push((i, "not one record".to_string())),
            Err(e) => bad.push((i, e)),
        }
    }
    if good.is_empty() {
        return Ok((None, kept, bad));
    }
    let batch = datafusion::arrow::compute::concat_batches(decoder.schema(), &good)?;
    Ok((Some(batch), kept, bad))
}

/// Decodes Debezium events (records without a value are skipped): rows, their records, whether
/// each deletes, and the records that failed.
#[allow(clippy::type_complexity)]
fn decode_debezium(
    decoder: &DebeziumDecoder,
    g: &Group,
) -> EngineResult<(
    Option<RecordBatch>,
    Vec<u32>,
    Vec<bool>,
    Vec<(usize, String)>,
)> {
    let n = g.records.len();
    if let Ok((batch, deleted)) = decoder.decode(&g.bytes, n)
        && batch.num_rows() == n
    {
        return Ok((Some(batch), (0..n as u32).collect(), deleted, Vec::new()));
    }
    let (mut good, mut kept, mut deleted, mut bad) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (_, range)) in g.records.iter().enumerate() {
        let mut one = g.bytes[range.clone()].to_vec();
        one.push(b'\n');
        match decoder.decode(&one, 1) {
            Ok((b, d)) if b.num_rows() == 1 => {
                good.push(b);
                kept.push(i as u32);
                deleted.extend(d);
            }
            Ok(_) => bad.push((i, "not one Debezium event".to_string())),
            Err(e) => bad.push((i, e)),
        }
    }
    if good.is_empty() {
        return Ok((None, kept, deleted, bad));
    }
    let schema = good[0].schema();
    let batch = datafusion::arrow::compute::concat_batches(&schema, &good)?;
    Ok((Some(batch), kept, deleted, bad))
}

/// Key rows (the key columns) as rows of `schema`: `key_columns[j]` is where key column `j`
/// goes; the other columns are null.
fn widen(
    keys: &RecordBatch,
    schema: &SchemaRef,
    key_columns: &[usize],
) -> EngineResult<RecordBatch> {
    let n = keys.num_rows();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, f)| match key_columns.iter().position(|&k| k == c) {
            Some(j) => Arc::clone(keys.column(j)),
            None => new_null_array(f.data_type(), n),
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// `partition:0,offset:42;partition:1,offset:300` (Flink's spelling).
fn parse_specific(spec: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
        let (mut partition, mut offset) = (None, None);
        for kv in part.split(',') {
            match kv.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("partition", v)) => partition = v.parse::<i32>().ok(),
                Some(("offset", v)) => offset = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        match (partition, offset) {
            (Some(p), Some(o)) => {
                out.insert(p, o);
            }
            _ => {
                return Err(format!(
                    "invalid scan.startup.specific-offsets entry \"{part}\": \
                     partition:N,offset:M expected"
                ));
            }
        }
    }
    Ok(out)
}

/// A position: per partition, (topic name, partition, next offset). Topic names, not indexes,
/// so that a changed topic list cannot shift positions onto other topics.
fn encode_state(next: &BTreeMap<(usize, i32), i64>, topics: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(next.len() * 24);
    for (&(t, p), &o) in next {
        let name = topics.get(t).map(String::as_bytes).unwrap_or_default();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
    }
    out
}

fn decode_state(mut bytes: &[u8], topics: &[String]) -> Option<BTreeMap<(usize, i32), i64>> {
    let mut out = BTreeMap::new();
    while !bytes.is_empty() {
        let len = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
        let rest = bytes.get(2 + len..)?;
        let p = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
        let o = i64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
        if let Some(t) = topics.iter().position(|t| t == name) {
            out.insert((t, p), o);
        }
        bytes = rest.get(12..)?;
    }
    Some(out)
}

impl ExternalSource for KafkaSource {
    fn open(&self, _progress: u64, state: &[u8]) -> EngineResult<Box<dyn ExternalReader>> {
        self.0.reader(state, false)
    }

    fn end(&self) -> EngineResult<u64> {
        let this = &self.0;
        let client = this.client()?;
        let mut sum = 0u64;
        for (t, p) in this.splits(&client)? {
            let (_, high) = client
                .fetch_watermarks(&this.topics[t], p, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("high watermarks", e))?;
            sum += high.max(0) as u64;
        }
        Ok(sum)
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.0.topics.join(", "))
    }

    fn snapshot(&self) -> EngineResult<Box<dyn ExternalReader>> {
        self.0.reader(&[], true)
    }

    fn committed(&self, state: &[u8]) {
        let this = &self.0;
        {
            let mut last = this.committed.lock();
            if last.as_deref() == Some(state) {
                return;
            }
            *last = Some(state.to_vec());
        }
        let Some(next) = decode_state(state, &this.topics) else {
            return;
        };
        let result = (|| -> EngineResult<()> {
            let mut tpl = TopicPartitionList::new();
            for (&(t, p), &o) in &next {
                tpl.add_partition_offset(&this.topics[t], p, Offset::Offset(o))
                    .map_err(|e| kafka_error("committing offsets", e))?;
            }
            let client = this.client()?;
            // Asynchronous: a broker that is down must not hold up the job's commits. Polling
            // serves the earlier commits' results (this client reads no records).
            let _ = client.poll(Duration::ZERO);
            client
                .commit(&tpl, rdkafka::consumer::CommitMode::Async)
                .map_err(|e| kafka_error("committing offsets", e))
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "kafka offsets not committed to the group");
        }
    }
}

/// Rows of one partition, waiting to be returned, with what goes with them.
struct Pending {
    split: (usize, i32),
    rows: Option<RecordBatch>,
    /// For a changelog format: whether each row deletes its key.
    deleted: Option<Vec<bool>>,
    /// The partition's next offset after these records.
    next: i64,
    dead: Vec<DeadLetter>,
}

/// Reads a [`KafkaSource`] from a position.
struct KafkaReader {
    source: Arc<KafkaTable>,
    /// Made, and partitions assigned, when the broker is first reached.
    consumer: Option<Client>,
    /// Whether `next` came from a checkpoint (new partitions then start at their beginning).
    restored: bool,
    /// Per partition: the offset after the last record returned.
    next: BTreeMap<(usize, i32), i64>,
    /// A bounded reader (an ad-hoc query) stops at these offsets (the high watermarks when it
    /// started).
    stop: Option<BTreeMap<(usize, i32), i64>>,
    bounded: bool,
    discovered: Instant,
    pending: VecDeque<Pending>,
    dead: Vec<DeadLetter>,
    trouble: Option<String>,
    /// When records last came (a bounded reader gives up after [`BOUNDED_STALL`]).
    idle_since: Instant,
    /// After a failure: when to try again, and the delay after that.
    retry: Option<(Instant, Duration)>,
    /// Per partition: its high watermark when last asked (at each discovery), for the
    /// consumer lag the server reports.
    ends: BTreeMap<(usize, i32), i64>,
}

impl KafkaReader {
    /// Reaches the broker: resolves where each partition starts and assigns them all.
    fn connect(&mut self) -> EngineResult<()> {
        let consumer = self.source.consumer()?;
        let splits = self.source.splits(&consumer)?;
        self.add_splits(&consumer, &splits)?;
        if self.bounded {
            let mut stop = BTreeMap::new();
            for &(t, p) in &splits {
                let (_, high) = consumer
                    .fetch_watermarks(&self.source.topics[t], p, REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("high watermarks", e))?;
                stop.insert((t, p), high);
            }
            self.stop = Some(stop);
        }
        self.assign(&consumer)?;
        self.consumer = Some(consumer);
        self.discovered = Instant::now();
        Ok(())
    }

    /// Gives partitions not yet known a start: by the startup mode for a new job, from their
    /// beginning when they appeared after the job started (as Flink reads new partitions).
    fn add_splits(&mut self, client: &Client, splits: &[(usize, i32)]) -> EngineResult<()> {
        let new: Vec<(usize, i32)> = splits
            .iter()
            .filter(|s| !self.next.contains_key(s))
            .copied()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let starts = if self.restored || self.bounded {
            let mut out = BTreeMap::new();
            for &(t, p) in &new {
                let (low, _) = client
                    .fetch_watermarks(&self.source.topics[t], p, REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("low watermarks", e))?;
                out.insert((t, p), low);
            }
            if self.bounded && !self.restored {
                // An ad-hoc query reads what the topic holds; a specific start still applies.
                match &self.source.startup {
                    Startup::Timestamp(_) | Startup::Specific(_) => {
                        self.source.start_offsets(client, &new)?
                    }
                    _ => out,
                }
            } else {
                out
            }
        } else {
            self.source.start_offsets(client, &new)?
        };
        self.next.extend(starts);
        Ok(())
    }

    fn assign(&self, consumer: &Client) -> EngineResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (&(t, p), &o) in &self.next {
            tpl.add_partition_offset(&self.source.topics[t], p, Offset::Offset(o))
                .map_err(|e| kafka_error("assigning partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("assigning partitions", e))
    }

    /// Looks for partitions added to the topics; assigns again when there are.
    fn discover(&mut self) -> EngineResult<()> {
        self.discovered = Instant::now();
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        let result = (|| {
            let splits = self.source.splits(&consumer)?;
            let before = self.next.len();
            // Partitions found later are new to the job, whatever the startup mode.
            let restored = std::mem::replace(&mut self.restored, true);
            let added = self.add_splits(&consumer, &splits);
            self.restored = restored || before > 0;
            added?;
            if self.next.len() != before {
                self.assign(&consumer)?;
            }
            // Lag is for monitoring only: a partition whose high watermark does not come keeps
            // the last one known.
            for &(t, p) in self.next.keys() {
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(&self.source.topics[t], p, REQUEST_TIMEOUT)
                {
                    self.ends.insert((t, p), high);
                }
            }
            Ok(())
        })();
        self.consumer = Some(consumer);
        result
    }

    fn failed(&mut self, e: &EngineError) {
        let delay = self
            .retry
            .map_or(BACKOFF.0, |(_, d)| (d * 2).min(BACKOFF.1));
        self.retry = Some((Instant::now() + delay, delay));
        self.trouble = Some(plain(e));
        tracing::warn!(error = %e, retry_in = ?delay, "kafka source");
    }

    /// Polls one round of records and decodes them into `pending`, one entry per partition.
    fn poll_round(&mut self) -> EngineResult<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        let meta: Vec<Metadata> = self
            .source
            .columns
            .iter()
            .filter_map(|c| match c {
                ColumnFrom::Meta(m) => Some(*m),
                ColumnFrom::Value(_) => None,
            })
            .collect();
        let (want_ts, want_key, want_headers) = (
            meta.contains(&Metadata::Timestamp),
            meta.contains(&Metadata::Key),
            meta.contains(&Metadata::Headers),
        );
        let upsert = matches!(self.source.changelog, Changelog::Upsert { .. });
        let mut groups: BTreeMap<(usize, i32), Group> = BTreeMap::new();
        let mut polled = 0;
        let mut error = None;
        while polled < BATCH_RECORDS {
            let wait = if polled == 0 {
                POLL_WAIT
            } else {
                Duration::ZERO
            };
            // Whatever has arrived is a round: no spinning for more once something has.
            let Some(m) = consumer.poll(wait) else {
                break;
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            polled += 1;
            let Some(t) = self.source.topics.iter().position(|t| t == m.topic()) else {
                continue;
            };
            let split = (t, m.partition());
            let g = groups.entry(split).or_default();
            g.next = m.offset() + 1;
            // A record without a value (a tombstone) deletes its key in an upsert table, and
            // has no row otherwise.
            let payload = m.payload().filter(|p| !p.is_empty());
            let tombstone = payload.is_none();
            if tombstone && !upsert {
                continue;
            }
            let start = g.bytes.len();
            g.bytes
                .extend_from_slice(payload.or(m.key()).unwrap_or_default());
            g.records.push((m.offset(), start..g.bytes.len()));
            g.tombstones.push(tombstone);
            g.bytes.push(b'\n');
            if want_ts {
                g.timestamps.push(m.timestamp().to_millis());
            }
            if want_key {
                g.keys.push(m.key().map(<[u8]>::to_vec));
            }
            if want_headers {
                g.headers.push(m.headers().map(|h| {
                    let map: serde_json::Map<String, serde_json::Value> = (0..h.count())
                        .filter_map(|i| h.try_get(i))
                        .map(|h| {
                            let v = h
                                .value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .map_or(serde_json::Value::Null, serde_json::Value::String);
                            (h.key.to_string(), v)
                        })
                        .collect();
                    serde_json::Value::Object(map).to_string()
                }));
            }
        }
        // librdkafka retries by itself; the reader reports the trouble and goes on polling.
        let reported = consumer.context().0.lock().take();
        if let Some(e) = error {
            self.trouble = Some(format!("kafka: {e}"));
        } else if polled > 0 {
            self.trouble = None;
        } else if let Some(e) = reported {
            self.trouble = Some(format!("kafka: {e}"));
        }
        for (split, g) in groups {
            let topic = &self.source.topics[split.0];
            let decoded = self.decode_group(topic, split.1, &g)?;
            let rows = match decoded.rows {
                Some((values, kept)) => Some(self.assemble(&values, &kept, split, &g)?),
                None => None,
            };
            self.pending.push_back(Pending {
                split,
                rows,
                deleted: decoded.deleted,
                next: g.next,
                dead: decoded.dead,
            });
        }
        Ok(())
    }

    /// Decodes one partition's records by the table's format. Returns the rows with the
    /// indexes of the records they come from, for a changelog format whether each row deletes,
    /// and the dead letters.
    fn decode_group(&self, topic: &str, partition: i32, g: &Group) -> EngineResult<Decoded> {
        let mut out = Decoded::default();
        if g.records.is_empty() {
            return Ok(out);
        }
        let dead_letter = |i: usize, error: String| {
            let (offset, range) = &g.records[i];
            let raw = &g.bytes[range.clone()];
            DeadLetter {
                table: String::new(),
                source: format!("{topic}/{partition}"),
                position: *offset as u64,
                raw: String::from_utf8_lossy(&raw[..raw.len().min(DeadLetter::MAX_RAW)])
                    .into_owned(),
                error,
            }
        };
        let all: Vec<usize> = (0..g.records.len()).collect();
        match &self.source.changelog {
            Changelog::Plain => {
                let (rows, kept, bad) = decode_subset(&self.source.decoder, g, &all)?;
                out.rows = rows.map(|r| (r, kept));
                out.dead = bad.into_iter().map(|(i, e)| dead_letter(i, e)).collect();
            }
            Changelog::Debezium(decoder) => {
                let (rows, kept, deleted, bad) = decode_debezium(decoder, g)?;
                out.rows = rows.map(|r| (r, kept));
                out.deleted = Some(deleted);
                out.dead = bad.into_iter().map(|(i, e)| dead_letter(i, e)).collect();
            }
            Changelog::Upsert { key, key_columns } => {
                let (values, tombstones): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&i| !g.tombstones[i]);
                let (v_rows, v_kept, v_bad) = decode_subset(&self.source.decoder, g, &values)?;
                // A tombstone's key gives the key columns of the row it deletes.
                let (k_rows, k_kept, k_bad) = match key {
                    Some(key) => {
                        let (rows, kept, bad) = decode_subset(key, g, &tombstones)?;
                        let rows = rows
                            .map(|r| widen(&r, self.source.decoder.schema(), key_columns))
                            .transpose()?;
                        (rows, kept, bad)
                    }
                    // The key is a metadata column: the rest of the row is empty.
                    None => (
                        Some(RecordBatch::try_new_with_options(
                            Arc::clone(self.source.decoder.schema()),
                            self.source
                                .decoder
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| new_null_array(f.data_type(), tombstones.len()))
                                .collect(),
                            &RecordBatchOptions::new().with_row_count(Some(tombstones.len())),
                        )?),
                        tombstones.iter().map(|&i| i as u32).collect(),
                        Vec::new(),
                    ),
                };
                // Back into record order.
                let mut order: Vec<(u32, usize, usize)> = Vec::new();
                order.extend(v_kept.iter().enumerate().map(|(j, &i)| (i, 0, j)));
                order.extend(k_kept.iter().enumerate().map(|(j, &i)| (i, 1, j)));
                order.sort_unstable();
                if !order.is_empty() {
                    let schema = self.source.decoder.schema();
                    let empty = RecordBatch::new_empty(Arc::clone(schema));
                    let (v, k) = (
                        v_rows.unwrap_or_else(|| empty.clone()),
                        k_rows.unwrap_or(empty),
                    );
                    let take: Vec<(usize, usize)> = order.iter().map(|o| (o.1, o.2)).collect();
                    let columns = (0..schema.fields().len())
                        .map(|c| interleave(&[v.column(c).as_ref(), k.column(c).as_ref()], &take))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    let rows = RecordBatch::try_new_with_options(
                        Arc::clone(schema),
                        columns,
                        &RecordBatchOptions::new().with_row_count(Some(take.len())),
                    )?;
                    out.deleted = Some(order.iter().map(|o| o.1 == 1).collect());
                    out.rows = Some((rows, order.iter().map(|o| o.0).collect()));
                }
                out.dead = v_bad
                    .into_iter()
                    .chain(k_bad)
                    .map(|(i, e)| dead_letter(i, e))
                    .collect();
            }
        }
        Ok(out)
    }

    /// The table's columns from the decoded values and the records' metadata (`kept`: the
    /// records the rows come from).
    fn assemble(
        &self,
        values: &RecordBatch,
        kept: &[u32],
        split: (usize, i32),
        g: &Group,
    ) -> EngineResult<RecordBatch> {
        let (records, timestamps, keys, headers) = (&g.records, &g.timestamps, &g.keys, &g.headers);
        let n = kept.len();
        let indices = UInt32Array::from(kept.to_vec());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.source.columns.len());
        for (c, field) in self.source.columns.iter().zip(self.source.schema.fields()) {
            let column: ArrayRef = match c {
                ColumnFrom::Value(i) => Arc::clone(values.column(*i)),
                ColumnFrom::Meta(m) => {
                    let raw: ArrayRef = match m {
                        Metadata::Topic => {
                            Arc::new(StringArray::from(vec![
                                self.source.topics[split.0].as_str();
                                n
                            ]))
                        }
                        Metadata::Partition => Arc::new(Int32Array::from(vec![split.1; n])),
                        Metadata::Offset => Arc::new(Int64Array::from(
                            kept.iter()
                                .map(|&i| records[i as usize].0)
                                .collect::<Vec<_>>(),
                        )),
                        Metadata::Timestamp => {
                            let all = TimestampMillisecondArray::from(timestamps.to_vec())
                                .with_timezone("+00:00");
                            take(&all, &indices, None)?
                        }
                        Metadata::Key => {
                            let all = BinaryArray::from(
                                keys.iter().map(|k| k.as_deref()).collect::<Vec<_>>(),
                            );
                            take(&all, &indices, None)?
                        }
                        Metadata::Headers => {
                            let all = StringArray::from(headers.to_vec());
                            take(&all, &indices, None)?
                        }
                    };
                    if raw.data_type() == field.data_type() {
                        raw
                    } else {
                        cast(&raw, field.data_type())?
                    }
                }
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(
            Arc::clone(&self.source.schema),
            columns,
        )?)
    }

    fn split_id(split: (usize, i32)) -> u32 {
        (split.0 as u32) * SPLITS_PER_TOPIC + split.1 as u32
    }
}

impl ExternalReader for KafkaReader {
    fn next(&mut self) -> EngineResult<Option<ExternalBatch>> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                self.next.insert(p.split, p.next);
                self.dead.extend(p.dead);
                match p.rows {
                    Some(rows) if rows.num_rows() > 0 => {
                        return Ok(Some(ExternalBatch {
                            rows,
                            split: Self::split_id(p.split),
                            progress: self.progress(),
                            deleted: p.deleted,
                        }));
                    }
                    _ => continue,
                }
            }
            if self.finished() {
                return Ok(None);
            }
            if let Some((at, _)) = self.retry
                && Instant::now() < at
            {
                std::thread::sleep(POLL_WAIT.min(at - Instant::now()));
                return Ok(None);
            }
            if self.consumer.is_none() {
                if let Err(e) = self.connect() {
                    // An ad-hoc query fails rather than waiting for the broker.
                    if self.bounded {
                        return Err(e);
                    }
                    self.failed(&e);
                    return Ok(None);
                }
                self.retry = None;
                self.trouble = None;
            } else if !self.bounded && self.discovered.elapsed() >= DISCOVERY {
                if let Err(e) = self.discover() {
                    self.failed(&e);
                    return Ok(None);
                }
                self.retry = None;
            }
            self.poll_round()?;
            if self.pending.is_empty() {
                self.skip_to_position();
                if self.bounded && self.idle_since.elapsed() > BOUNDED_STALL {
                    return Err(EngineError::Internal(format!(
                        "kafka: no records from {} for {} s before its end{}",
                        self.source.topics.join(", "),
                        BOUNDED_STALL.as_secs(),
                        self.trouble
                            .as_ref()
                            .map(|t| format!(" ({t})"))
                            .unwrap_or_default()
                    )));
                }
                return Ok(None);
            }
            self.idle_since = Instant::now();
        }
    }

    fn finished(&self) -> bool {
        match &self.stop {
            Some(stop) if self.pending.is_empty() => stop
                .iter()
                .all(|(s, &high)| self.next.get(s).is_none_or(|&o| o >= high)),
            _ => false,
        }
    }

    fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    fn splits(&self) -> Vec<u32> {
        self.next.keys().map(|&s| Self::split_id(s)).collect()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(&self.next, &self.source.topics)
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.clone()
    }

    fn split_status(&self) -> Vec<SplitStatus> {
        self.next
            .iter()
            .map(|(&(t, p), &next)| SplitStatus {
                name: format!("{}/{p}", self.source.topics[t]),
                position: next,
                end: self.ends.get(&(t, p)).map(|&end| end.max(next)),
            })
            .collect()
    }

    fn progress(&self) -> Option<u64> {
        self.consumer.is_some().then(|| self.progress())
    }
}

impl KafkaReader {
    /// With nothing delivered, moves each partition's next offset to the consumer's position
    /// where that is further: offsets that hold no record for the application (transaction
    /// markers) would otherwise keep FLUSH and a bounded read waiting for them.
    fn skip_to_position(&mut self) {
        let Some(consumer) = self.consumer.as_ref() else {
            return;
        };
        let Ok(position) = consumer.position() else {
            return;
        };
        for e in position.elements() {
            let Some(t) = self.source.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            if let (Offset::Offset(o), Some(next)) =
                (e.offset(), self.next.get_mut(&(t, e.partition())))
                && o > *next
            {
                *next = o;
            }
        }
    }

    /// The sum of the partitions' next offsets.
    fn progress(&self) -> u64 {
        self.next.values().map(|&o| o.max(0) as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_by_topic_name() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let next = BTreeMap::from([((0, 0), 5), ((0, 1), 7), ((1, 0), 11)]);
        let bytes = encode_state(&next, &topics);
        assert_eq!(decode_state(&bytes, &topics), Some(next));
        // Another topic list keeps the positions of the topics it still has.
        let other = vec!["b".to_string()];
        assert_eq!(
            decode_state(&bytes, &other),
            Some(BTreeMap::from([((0, 0), 11)]))
        );
        assert_eq!(decode_state(&bytes[..3], &topics), None);
    }

    #[test]
    fn specific_offsets() {
        assert_eq!(
            parse_specific("partition:0,offset:42;partition:1,offset:300"),
            Ok(BTreeMap::from([(0, 42), (1, 300)]))
        );
        assert!(parse_specific("partition:x").is_err());
    }
}
