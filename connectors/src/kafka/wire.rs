//! The few Kafka requests librdkafka does not make for us, spoken directly (`kafka-protocol`
//! encodes and decodes them): finishing a transaction a crashed producer left prepared, and
//! reading a partition's record batches as they are stored, control batches included.
//!
//! librdkafka cannot resume another producer's transaction: a new producer with the same
//! transactional id aborts it. After a crash between the checkpoint that holds an epoch and the
//! commit of that epoch's transaction, the Kafka sink therefore commits it here, as Flink does:
//! the producer id and epoch come from a batch the transaction wrote (its location is in the
//! checkpoint), and `EndTxn` goes to the transaction's coordinator.
//!
//! One blocking connection per request group, with timeouts; a bootstrap list is tried in order.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, EndTxnRequest, FetchRequest, FindCoordinatorRequest,
    MetadataRequest, ProducerId, RequestHeader, ResponseHeader, TopicName, TransactionalId,
    fetch_request::{FetchPartition, FetchTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

/// How long one request may take on the wire.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long retriable answers (a coordinator loading, a transaction completing) are retried.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// The largest response accepted (a fetch asks for less).
const MAX_RESPONSE: usize = 256 << 20;

/// The highest version of each request this module speaks: the ones whose fields it fills
/// (Fetch past 12 names topics by id, FindCoordinator past 3 batches keys).
const MAX_VERSIONS: &[(ApiKey, i16)] = &[
    (ApiKey::Metadata, 9),
    (ApiKey::Fetch, 12),
    (ApiKey::FindCoordinator, 3),
    (ApiKey::EndTxn, 3),
];

/// One connection to one broker, with the versions it speaks.
pub struct Connection {
    stream: TcpStream,
    address: String,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

fn io_error(address: &str, e: impl std::fmt::Display) -> String {
    format!("kafka broker {address}: {e}")
}

impl Connection {
    /// Connects to `address` (`host:port`) and asks which versions it speaks.
    pub fn open(address: &str) -> Result<Self, String> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| io_error(address, e))?
            .next()
            .ok_or_else(|| io_error(address, "no address"))?;
        let stream =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| io_error(address, e))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| io_error(address, e))?;
        let mut conn = Self {
            stream,
            address: address.to_string(),
            correlation: 0,
            versions: HashMap::new(),
        };
        let versions = conn.exchange(&ApiVersionsRequest::default(), 0)?;
        if let Some(e) = ResponseError::try_from_code(versions.error_code) {
            return Err(io_error(address, format!("ApiVersions: {e}")));
        }
        conn.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// Connects to the first broker of a bootstrap list (`host:port,host:port`) that answers.
    pub fn bootstrap(servers: &str) -> Result<Self, String> {
        let mut last = format!("no bootstrap servers in \"{servers}\"");
        for s in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Self::open(s) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends `request` at the highest version both sides speak and returns the answer.
    pub fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, String> {
        let key = R::KEY;
        let (broker_min, broker_max) = self.versions.get(&key).copied().ok_or_else(|| {
            io_error(
                &self.address,
                format!("the broker does not serve API key {key}"),
            )
        })?;
        let ours = MAX_VERSIONS
            .iter()
            .find(|(k, _)| *k as i16 == key)
            .map_or(R::VERSIONS.max, |(_, v)| *v)
            .min(R::VERSIONS.max);
        let version = ours.min(broker_max);
        if version < broker_min.max(R::VERSIONS.min) {
            return Err(io_error(
                &self.address,
                format!("no version of API key {key} in common ({broker_min}..{broker_max})"),
            ));
        }
        self.exchange(request, version)
    }

    fn exchange<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, String> {
        let address = self.address.clone();
        let err = |e: &dyn std::fmt::Display| io_error(&address, e);
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("rivulet")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|e| err(&e))?;
        request.encode(&mut body, version).map_err(|e| err(&e))?;
        let mut framed = BytesMut::with_capacity(body.len() + 4);
        framed.put_i32(body.len() as i32);
        framed.extend_from_slice(&body);
        self.stream.write_all(&framed).map_err(|e| err(&e))?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(|e| err(&e))?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE)
            .ok_or_else(|| err(&format!("a response of {size} bytes")))?;
        let mut answer = vec![0u8; size];
        self.stream.read_exact(&mut answer).map_err(|e| err(&e))?;
        let mut answer = Bytes::from(answer);
        let header = ResponseHeader::decode(&mut answer, R::Response::header_version(version))
            .map_err(|e| err(&e))?;
        if header.correlation_id != self.correlation {
            return Err(err(&format!(
                "answer {} to request {}",
                header.correlation_id, self.correlation
            )));
        }
        R::Response::decode(&mut answer, version).map_err(|e| err(&e))
    }
}

/// `what` failed with Kafka error `code`, or did not.
fn check(code: i16, what: &str) -> Result<(), ResponseError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) => {
            tracing::debug!(%e, what, "kafka request answered with an error");
            Err(e)
        }
    }
}

/// Calls `attempt` until it succeeds, fails with an error that is not worth retrying, or
/// [`RETRY_FOR`] has passed.
fn retrying<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<Result<T, ResponseError>, String>,
) -> Result<Result<T, ResponseError>, String> {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(Err(e)) if transient(e) && started.elapsed() < RETRY_FOR => {}
            Err(e) if started.elapsed() < RETRY_FOR => {
                tracing::debug!(%e, what, "kafka request failed, retrying");
            }
            other => return other,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An answer that may change by itself: coordinators moving or loading, a transaction still
/// completing, a leader changing.
fn transient(e: ResponseError) -> bool {
    e.is_retriable() || e == ResponseError::ConcurrentTransactions
}

/// A cluster reached through its bootstrap servers.
pub struct Cluster {
    bootstrap: String,
}

impl Cluster {
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
        }
    }

    /// A connection to the leader of `topic`'s partition `partition`.
    fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Result<Connection, ResponseError>, String> {
        let mut conn = Connection::bootstrap(&self.bootstrap)?;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_string())),
            ))]));
        let metadata = conn.send(&request)?;
        let Some(t) = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            return Ok(Err(ResponseError::UnknownTopicOrPartition));
        };
        if let Err(e) = check(t.error_code, "metadata") {
            return Ok(Err(e));
        }
        let Some(p) = t.partitions.iter().find(|p| p.partition_index == partition) else {
            return Ok(Err(ResponseError::UnknownTopicOrPartition));
        };
        if let Err(e) = check(p.error_code, "metadata") {
            return Ok(Err(e));
        }
        let leader = p.leader_id;
        let broker = metadata
            .brokers
            .iter()
            .find(|b| b.node_id == leader)
            .ok_or(ResponseError::LeaderNotAvailable);
        Ok(match broker {
            Ok(b) => Ok(Connection::open(&format!(
                "{}:{}",
                b.host.as_str(),
                b.port
            ))?),
            Err(e) => Err(e),
        })
    }

    /// The stored record batches of `topic`'s partition `partition` from the one holding
    /// `offset` on, up to about `max_bytes` (at least one batch), uncommitted and control
    /// batches included, each whole. Empty past the end of the partition.
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<Vec<Bytes>, String> {
        let answer = retrying("fetch", || {
            let mut conn = match self.leader(topic, partition)? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                // Some brokers (nisshi) answer nothing at all to a zero wait; with `min_bytes`
                // 0 the answer comes as soon as the partition is read.
                .with_max_wait_ms(500)
                .with_min_bytes(0)
                .with_max_bytes(max_bytes)
                .with_isolation_level(0)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_current_leader_epoch(-1)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(max_bytes),
                        ]),
                ]);
            let response = conn.send(&request)?;
            if let Err(e) = check(response.error_code, "fetch") {
                return Ok(Err(e));
            }
            let data = response
                .responses
                .into_iter()
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition);
            let Some(data) = data else {
                return Ok(Err(ResponseError::UnknownTopicOrPartition));
            };
            if let Err(e) = check(data.error_code, "fetch") {
                return Ok(Err(e));
            }
            Ok(Ok(data.records.unwrap_or_default()))
        })?;
        let records =
            answer.map_err(|e| format!("fetching {topic}/{partition} at {offset}: {e}"))?;
        Ok(whole_batches(records))
    }

    /// The producer id and epoch that wrote the record at `offset` of `topic`'s partition
    /// `partition`.
    pub fn producer_of(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(i64, i16), String> {
        for mut batch in self.fetch(topic, partition, offset, 1 << 20)? {
            let infos =
                RecordBatchDecoder::decode_batch_info(&mut batch).map_err(|e| e.to_string())?;
            for info in infos {
                let last = info.min_offset + i64::from(info.record_count.max(1)) - 1;
                if (info.min_offset..=last).contains(&offset) {
                    return Ok((info.producer_id, info.producer_epoch));
                }
            }
        }
        Err(format!(
            "no record batch of {topic}/{partition} holds offset {offset} (deleted or compacted?)"
        ))
    }

    /// Ends (commits, or aborts) the transaction `producer` (id, epoch) has open under
    /// `transactional_id`. `Ok(Err(e))` when the coordinator refused it, with its reason.
    pub fn end_transaction(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<Result<(), ResponseError>, String> {
        retrying("end transaction", || {
            let mut conn = Connection::bootstrap(&self.bootstrap)?;
            let found = conn.send(
                &FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_string(transactional_id.to_string()))
                    .with_key_type(1),
            )?;
            if let Err(e) = check(found.error_code, "find coordinator") {
                return Ok(Err(e));
            }
            let mut coordinator =
                Connection::open(&format!("{}:{}", found.host.as_str(), found.port))?;
            let ended = coordinator.send(
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(
                        transactional_id.to_string(),
                    )))
                    .with_producer_id(ProducerId(producer.0))
                    .with_producer_epoch(producer.1)
                    .with_committed(commit),
            )?;
            Ok(check(ended.error_code, "end transaction"))
        })
    }
}

/// The complete record batches at the start of `records` (a fetch may end inside one).
fn whole_batches(mut records: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    // A batch: base offset (8 bytes), length (4), then `length` bytes.
    while records.len() >= 12 {
        let length = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let Some(total) = usize::try_from(length).ok().map(|l| l + 12) else {
            break;
        };
        if total > records.len() {
            break;
        }
        out.push(records.split_to(total));
    }
    if records.has_remaining() {
        tracing::trace!(
            left = records.len(),
            "a partial record batch at the end of a fetch"
        );
    }
    out
}
