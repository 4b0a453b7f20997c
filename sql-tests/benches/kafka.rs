//! Kafka end to end: Nexmark bids as JSON in a 3-partition topic of a real Kafka-protocol broker
//! (Tansu, as the tests start it), read by the release server into a 10 s TUMBLE count per
//! auction. `scripts/bench kafka`.
//!
//! 1. Throughput: `RIVULET_BENCH_EVENTS` bids (default 2,000,000, `genbids.py`'s fields) are
//!    produced first; then the view is created and timed until FLUSH returns (every record read,
//!    decoded, aggregated and committed), with the server's CPU seconds (user + system). Prints
//!    events/s and events per CPU-second into a materialized view (updated as events come, and
//!    emitted on window close) and into a blackhole sink (what the Flink comparison measures).
//! 2. Decoding share: the same records decoded by the connector's JSON decoder alone, in this
//!    process on one core; its CPU per event over the server's.
//! 3. Latency: a producer writes bids at 50,000 (then 10,000) per second for 10 s, each carrying
//!    its send time;
//!    a client polls the view (emit on update, default 100 ms barriers) and, for each record
//!    newly visible, takes now minus its send time. Prints p50 and p99.
//! 4. Kafka sinks, on a nisshi broker (Tansu refuses transactions): the 10 s TUMBLE from the
//!    topic into a Kafka sink (`INSERT INTO`, windows emitted on close), exactly-once and
//!    at-least-once, in events per CPU-second; then the latency from produce to a
//!    `read_committed` consumer of the sink's topic at 10,000 events/s through a projection
//!    (each record its own latency; a window's output waits for its window to close), p50/p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rivulet_sql_tests::kafka::Broker;
use rivulet_sql_tests::{TestServer, text_rows};

/// Bid `i` of the LCG stream (`genbids.py`'s fields), with event time `base + i / 100` ms.
fn bid(x: &mut u64, i: u64, base: u64, extra: &str) -> String {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let (a, b, p) = (
        (*x >> 20) % 10000,
        (*x >> 34) % 1_000_000,
        1 + (*x >> 7) % 100_000,
    );
    let c = rivulet_sql_tests::bids::CHANNELS[((*x >> 50) & 7) as usize];
    format!(
        "{{\"auction\":{a},\"bidder\":{b},\"price\":{p},\"channel\":\"{c}\",\"url\":\"https://www.nexmark.com/item.htm?query=1&id={a}\",\"date_time\":{},\"extra\":\"{extra}\"}}",
        base + i / 100
    )
}

fn table_sql(name: &str, topic: &str, bootstrap: &str) -> String {
    format!(
        "CREATE TABLE {name} (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
           url VARCHAR, date_time BIGINT, extra VARCHAR, \
           ts AS TO_TIMESTAMP_LTZ(date_time, 3), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH ('connector' = 'kafka', 'topic' = '{topic}', \
               'properties.bootstrap.servers' = '{bootstrap}', \
               'scan.startup.mode' = 'earliest-offset', 'format' = 'json')"
    )
}

const TUMBLE: &str = "SELECT auction, window_start, window_end, count(*) AS n \
     FROM TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
     GROUP BY auction, window_start, window_end";

async fn server(barrier_ms: &str) -> TestServer {
    TestServer::start_with_flags(&[
        "--streaming-parallelism",
        "1",
        "--barrier-interval-ms",
        barrier_ms,
    ])
    .await
    .unwrap()
}

/// Produces `n` bids round-robin over 3 partitions; returns the seconds it took.
fn produce(broker: &Broker, topic: &str, n: u64) -> f64 {
    let producer = broker.producer().unwrap();
    let t0 = Instant::now();
    let mut x = 12345u64;
    let chunk = 30_000u64;
    let mut i = 0;
    while i < n {
        let end = (i + chunk).min(n);
        let mut per: [Vec<String>; 3] = Default::default();
        for j in i..end {
            per[(j % 3) as usize].push(bid(&mut x, j, 1_700_000_000_000, ""));
        }
        for (p, values) in per.iter().enumerate() {
            producer.send_values(topic, p as i32, values).unwrap();
        }
        i = end;
    }
    t0.elapsed().as_secs_f64()
}

/// Where the counts go.
#[derive(Clone, Copy, PartialEq)]
enum Into_ {
    /// A materialized view, updated as events come.
    View,
    /// A materialized view with EMIT ON WINDOW CLOSE.
    ViewOnClose,
    /// Flink's INSERT INTO a blackhole table (windows emitted on close).
    Sink,
}

async fn throughput(broker: &Broker, events: u64, into: Into_) -> (f64, f64) {
    let sink = into == Into_::Sink;
    let server = server("1000").await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&table_sql("bid", "bids", &broker.bootstrap()))
        .await
        .unwrap();
    let query = TUMBLE.replace("{t}", "bid");
    let statement = if sink {
        c.batch_execute(
            "CREATE TABLE counts (auction BIGINT, window_start TIMESTAMPTZ, \
             window_end TIMESTAMPTZ, n BIGINT) WITH ('connector' = 'blackhole')",
        )
        .await
        .unwrap();
        format!("INSERT INTO counts {query}; FLUSH")
    } else if into == Into_::ViewOnClose {
        format!("CREATE MATERIALIZED VIEW counts AS {query} EMIT ON WINDOW CLOSE; FLUSH")
    } else {
        format!("CREATE MATERIALIZED VIEW counts AS {query}; FLUSH")
    };
    let (wall, cpu) = timed(&server, &c, &statement).await;
    let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
    assert!(jobs.iter().all(|j| !j.contains("failed")), "{jobs:?}");
    if into == Into_::View {
        let n = text_rows(&c, "SELECT sum(n) FROM counts").await.unwrap();
        assert_eq!(n, vec![events.to_string()], "the view misses events");
    }
    server.kill9().await.unwrap();
    (events as f64 / wall, events as f64 / cpu.max(1e-3))
}

/// Runs `statement` on `c`: (wall seconds, the server's CPU seconds).
async fn timed(server: &TestServer, c: &tokio_postgres::Client, statement: &str) -> (f64, f64) {
    let cpu0 = server.cpu_time().unwrap();
    let t0 = Instant::now();
    c.batch_execute(statement).await.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    (wall, (server.cpu_time().unwrap() - cpu0).as_secs_f64())
}

/// `scripts/bench kafka`'s part 4: the TUMBLE into a Kafka sink with `guarantee`, timed until
/// FLUSH returns: (events/s, events per CPU-s).
async fn sink_throughput(broker: &Broker, events: u64, guarantee: &str) -> (f64, f64) {
    let topic = format!("counts_{}", guarantee.replace('-', "_"));
    broker.create_topic(&topic, 1).await.unwrap();
    let server = server("100").await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&table_sql("bid", "bids", &broker.bootstrap()))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE counts (auction BIGINT, window_start TIMESTAMPTZ, \
         window_end TIMESTAMPTZ, n BIGINT) WITH ('connector' = 'kafka', 'topic' = '{topic}', \
         'properties.bootstrap.servers' = '{}', 'format' = 'json', \
         'sink.delivery-guarantee' = '{guarantee}')",
        broker.bootstrap()
    ))
    .await
    .unwrap();
    let statement = format!("INSERT INTO counts {}; FLUSH", TUMBLE.replace("{t}", "bid"));
    let (wall, cpu) = timed(&server, &c, &statement).await;
    let sinks = text_rows(&c, "SHOW SINKS").await.unwrap();
    assert!(sinks[0].contains("|running|"), "{sinks:?}");
    server.kill9().await.unwrap();
    (events as f64 / wall, events as f64 / cpu.max(1e-3))
}

/// `scripts/bench kafka`'s part 4: records at `rate` per second for 10 s through a projection
/// into a Kafka sink with `guarantee`; a `read_committed` consumer of the sink's topic takes
/// now minus each record's send time. (p50, p99, records) in ms. With no guarantee, no server:
/// the consumer reads the source topic itself, which is the broker's own latency.
async fn sink_latency(broker: &Broker, rate: u64, guarantee: Option<&str>) -> (f64, f64, usize) {
    let suffix = guarantee.unwrap_or("broker").replace('-', "_");
    let (source, out) = (format!("live_in_{suffix}"), format!("live_out_{suffix}"));
    broker.create_topic(&source, 3).await.unwrap();
    broker.create_topic(&out, 1).await.unwrap();
    let Some(guarantee) = guarantee else {
        return paced_latency(broker, rate, &source, &source).await;
    };
    let server = server("100").await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&table_sql("live", &source, &broker.bootstrap()))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE live_out (seq BIGINT, auction BIGINT, price BIGINT) WITH ( \
         'connector' = 'kafka', 'topic' = '{out}', 'properties.bootstrap.servers' = '{}', \
         'format' = 'json', 'sink.delivery-guarantee' = '{guarantee}'); \
         INSERT INTO live_out SELECT CAST(extra AS BIGINT), auction, price FROM live",
        broker.bootstrap()
    ))
    .await
    .unwrap();
    let result = paced_latency(broker, rate, &source, &out).await;
    server.kill9().await.unwrap();
    result
}

/// Produces bids at `rate` per second for 10 s to `source` (3 partitions), each numbered, while
/// a `read_committed` consumer of `read` takes now minus each numbered record's send time.
async fn paced_latency(broker: &Broker, rate: u64, source: &str, read: &str) -> (f64, f64, usize) {
    const SECONDS: u64 = 10;
    let total = rate * SECONDS;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("latency-{source}"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("log_level", "3")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    // The sink's topic has 1 partition; a source read directly has 3.
    let partitions = if read == source { 3 } else { 1 };
    for p in 0..partitions {
        tpl.add_partition_offset(read, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let producer = broker.producer().unwrap();
    let start = Instant::now();
    let mut x = 7u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut sent = vec![0u64; total as usize];
    let mut latencies = Vec::with_capacity(total as usize);
    let mut seq = 0u64;
    let deadline = Duration::from_secs(SECONDS + 30);
    while (latencies.len() as u64) < total && start.elapsed() < deadline {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due > seq {
            let mut per: [Vec<String>; 3] = Default::default();
            let t = start.elapsed().as_micros() as u64;
            for s in seq..due {
                per[(s % 3) as usize].push(bid(&mut x, s, now_ms, &s.to_string()));
                sent[s as usize] = t;
            }
            for (p, values) in per.iter().enumerate() {
                producer.queue_values(source, p as i32, values).unwrap();
            }
            seq = due;
        }
        // Consumer polls run on this thread between produce ticks.
        while let Some(m) = consumer.poll(Duration::from_millis(1)) {
            let m = m.unwrap();
            let text = std::str::from_utf8(m.payload().unwrap_or_default()).unwrap();
            // The sink's records carry `"seq":N`, the source's `"extra":"N"`.
            let s: usize = text
                .split_once("\"seq\":")
                .or_else(|| text.split_once("\"extra\":\""))
                .and_then(|(_, r)| r.split([',', '}', '"']).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap();
            let now = start.elapsed().as_micros() as u64;
            latencies.push(now.saturating_sub(sent[s]) as f64 / 1000.0);
        }
    }
    producer.flush().unwrap();
    assert!(!latencies.is_empty(), "no record reached {read}");
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    (pct(0.5), pct(0.99), latencies.len())
}

/// CPU seconds of this thread.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

/// CPU seconds per event of the JSON decoder alone, over 8192-record batches.
fn decode_cost(events: u64) -> f64 {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use rivulet_connectors::format::{Encoding, RecordDecoder};
    let schema = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("date_time", DataType::Int64, true),
        Field::new("extra", DataType::Utf8, true),
    ]));
    let decoder = RecordDecoder::new(schema, Encoding::Json).unwrap();
    let mut x = 12345u64;
    let batch: Vec<u8> = (0..8192u64)
        .flat_map(|i| {
            let mut line = bid(&mut x, i, 1_700_000_000_000, "").into_bytes();
            line.push(b'\n');
            line
        })
        .collect();
    let rounds = events.div_ceil(8192);
    let cpu0 = thread_cpu();
    for _ in 0..rounds {
        let rows = decoder.decode(&batch, 8192).unwrap().unwrap();
        assert_eq!(rows.num_rows(), 8192);
    }
    (thread_cpu() - cpu0) / (rounds * 8192) as f64
}

async fn latency(broker: &Broker, rate: u64) -> (f64, f64, usize) {
    let topic = format!("live{rate}");
    broker.create_topic(&topic, 3).await.unwrap();
    let server = server("100").await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&table_sql("live", &topic, &broker.bootstrap()))
        .await
        .unwrap();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW live_counts AS SELECT auction, window_start, window_end, \
           count(*) AS n, max(CAST(extra AS BIGINT)) AS seq \
         FROM TABLE(TUMBLE(TABLE live, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
         GROUP BY auction, window_start, window_end",
    )
    .await
    .unwrap();
    // The producer: 50 records per millisecond tick for 10 s; record `seq` carries its number,
    // and its send time is kept here.
    const SECONDS: u64 = 10;
    let total = rate * SECONDS;
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..total).map(|_| Default::default()).collect());
    let producer = broker.producer().unwrap();
    let sent2 = Arc::clone(&sent);
    let topic2 = topic.clone();
    let writer = std::thread::spawn(move || {
        let topic = topic2;
        let start = Instant::now();
        let mut x = 99u64;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut seq = 0u64;
        while seq < total {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            if due <= seq {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let mut per: [Vec<String>; 3] = Default::default();
            let t = start.elapsed().as_micros() as u64;
            for s in seq..due {
                per[(s % 3) as usize].push(bid(&mut x, s, now_ms, &s.to_string()));
                sent2[s as usize].store(t, std::sync::atomic::Ordering::Relaxed);
            }
            for (p, values) in per.iter().enumerate() {
                producer.queue_values(&topic, p as i32, values).unwrap();
            }
            seq = due;
        }
        producer.flush().unwrap();
        start
    });
    // Poll the view; each record newly visible (by its number, per partition's order) gets
    // its latency. The producer's start is only known at its end: keep (poll time, seq) pairs.
    let poll_start = Instant::now();
    let mut seen: Vec<(Instant, i64)> = Vec::new();
    let mut last = -1i64;
    while last + 1 < total as i64 && poll_start.elapsed() < Duration::from_secs(SECONDS + 30) {
        let v = text_rows(&c, "SELECT max(seq) FROM live_counts")
            .await
            .unwrap();
        if let Some(m) = v.first().and_then(|s| s.parse::<i64>().ok())
            && m > last
        {
            seen.push((Instant::now(), m));
            last = m;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let start = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let mut latencies = Vec::new();
    let mut from = 0i64;
    for (at, m) in seen {
        let now = at.duration_since(start).as_micros() as u64;
        for s in from..=m {
            let t = sent[s as usize].load(std::sync::atomic::Ordering::Relaxed);
            latencies.push(now.saturating_sub(t) as f64 / 1000.0);
        }
        from = m + 1;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    server.kill9().await.unwrap();
    (pct(0.5), pct(0.99), latencies.len())
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("Kafka end to end: run it with `scripts/bench kafka`");
        return;
    }
    let events: u64 = std::env::var("RIVULET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let broker = Broker::start().await.unwrap();
    broker.create_topic("bids", 3).await.unwrap();
    let secs = produce(&broker, "bids", events);
    println!(
        "produced {events} JSON bids to 3 partitions in {secs:.1} s ({:.0}/s)",
        events as f64 / secs
    );
    let (view_rate, view_cpu) = throughput(&broker, events, Into_::View).await;
    let (close_rate, close_cpu) = throughput(&broker, events, Into_::ViewOnClose).await;
    let (sink_rate, sink_cpu) = throughput(&broker, events, Into_::Sink).await;
    let decode = decode_cost(events.min(2_000_000));
    println!();
    println!("| 10 s TUMBLE count per auction | events/s | events per CPU-s | decoding share |");
    println!("|---|---|---|---|");
    println!(
        "| into a materialized view | {view_rate:.0} | {view_cpu:.0} | {:.0}% |",
        100.0 * decode * view_cpu
    );
    println!(
        "| into a materialized view, emitted on close | {close_rate:.0} | {close_cpu:.0} | {:.0}% |",
        100.0 * decode * close_cpu
    );
    println!(
        "| into a blackhole sink (INSERT INTO) | {sink_rate:.0} | {sink_cpu:.0} | {:.0}% |",
        100.0 * decode * sink_cpu
    );
    println!(
        "JSON decoding alone: {:.0} events per CPU-s",
        1.0 / decode.max(1e-12)
    );
    // At 50,000 events/s the test broker (Tansu on SQLite) itself falls behind (it writes and
    // serves about 60,000 records/s here): the lower rate shows Rivulet's own latency.
    for rate in [50_000, 10_000] {
        let (p50, p99, n) = latency(&broker, rate).await;
        println!(
            "latency from produce to the view at {rate} events/s ({n} records): p50 {p50:.0} ms, p99 {p99:.0} ms"
        );
    }
    drop(broker);

    // Kafka sinks: source and sink topics on nisshi, which does transactions.
    let broker = Broker::start_nisshi().await.unwrap();
    broker.create_topic("bids", 3).await.unwrap();
    let secs = produce(&broker, "bids", events);
    println!();
    println!(
        "nisshi: produced {events} JSON bids to 3 partitions in {secs:.1} s ({:.0}/s)",
        events as f64 / secs
    );
    println!("| 10 s TUMBLE count per auction into a Kafka sink | events/s | events per CPU-s |");
    println!("|---|---|---|");
    for guarantee in ["exactly-once", "at-least-once"] {
        let (rate, cpu) = sink_throughput(&broker, events, guarantee).await;
        println!("| {guarantee} | {rate:.0} | {cpu:.0} |");
    }
    for guarantee in [None, Some("exactly-once"), Some("at-least-once")] {
        let (p50, p99, n) = sink_latency(&broker, 10_000, guarantee).await;
        let through = match guarantee {
            Some(g) => format!("a Kafka sink ({g})"),
            None => "the source topic itself (the broker alone)".to_string(),
        };
        println!(
            "latency from produce to a read_committed reader of {through} at 10000 events/s \
             ({n} records): p50 {p50:.0} ms, p99 {p99:.0} ms"
        );
    }
}
