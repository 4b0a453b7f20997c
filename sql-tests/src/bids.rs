//! The benchmarks' bid stream: Nexmark-shaped bids as newline-delimited JSON, the format
//! `bench/genbids.py` writes and Flink's `json` format and Rivulet's `filesystem` table read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The benchmarks' tumble query over `bid`: a 10-second TUMBLE count and sum per auction.
pub const TUMBLE: &str = "SELECT window_start, window_end, auction, COUNT(*), SUM(price) \
     FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
     GROUP BY window_start, window_end, auction";

/// `CREATE TABLE bid` reading the bids file at `path` (JSON lines, event time from
/// `date_time` milliseconds, watermark one second behind).
pub fn table_ddl(path: &Path) -> String {
    format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
           url VARCHAR, date_time BIGINT, extra VARCHAR, \
           ts AS TO_TIMESTAMP_LTZ(date_time, 3), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH ('connector' = 'filesystem', 'path' = 'file://{}', 'format' = 'json')",
        path.display()
    )
}

/// The number of bids (lines) in the file at `path`.
pub fn count(path: &Path) -> u64 {
    std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(path).unwrap())).count()
        as u64
}

/// How many bids a benchmark uses: `RIVULET_BENCH_EVENTS`, default 10,000,000.
pub fn events() -> u64 {
    std::env::var("RIVULET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// The bids file (`RIVULET_BENCH_BIDS`, default `/tmp/rivulet-bench/bids.jsonl`), written with
/// `rows` bids first if it is not there.
pub fn file(rows: u64) -> PathBuf {
    let path = PathBuf::from(
        std::env::var("RIVULET_BENCH_BIDS")
            .unwrap_or_else(|_| "/tmp/rivulet-bench/bids.jsonl".into()),
    );
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let t0 = Instant::now();
        write_bids(&path, rows);
        println!(
            "wrote {rows} bids to {} in {:.1} s",
            path.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    path
}

/// The bids' channels, picked by the generator's state (`genbids.py`'s list).
pub const CHANNELS: [&str; 8] = [
    "Google",
    "Facebook",
    "Baidu",
    "Apple",
    "channel-1234",
    "channel-42",
    "channel-777",
    "channel-9",
];

/// Writes `n` bids to `path` (through a temporary file, so a partial file is never taken for
/// a whole one).
fn write_bids(path: &Path, n: u64) {
    let base: u64 = 1_700_000_000_000;
    let mut x: u64 = 12345;
    let tmp = path.with_extension("partial");
    let mut out = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp).unwrap());
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (a, b, p) = (
            (x >> 20) % 10000,
            (x >> 34) % 1_000_000,
            1 + (x >> 7) % 100_000,
        );
        let c = CHANNELS[((x >> 50) & 7) as usize];
        writeln!(
            out,
            "{{\"auction\":{a},\"bidder\":{b},\"price\":{p},\"channel\":\"{c}\",\"url\":\"https://www.nexmark.com/item.htm?query=1&id={a}\",\"date_time\":{},\"extra\":\"\"}}",
            base + i / 100
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    std::fs::rename(tmp, path).unwrap();
}
