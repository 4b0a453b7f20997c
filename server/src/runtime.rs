//! The DataFusion runtime every session's ad-hoc queries share: one memory pool and one spill
//! directory.
//!
//! The pool bounds what all running queries may hold at once (`--query-memory`), so one big query
//! fails with `53200` (out of memory) instead of taking the server down; sorts, aggregations and
//! joins that can spill write Arrow IPC files under `<data dir>/tmp` first. The pool is fair
//! between spilling operators (`FairSpillPool`) and names its largest consumers in the error.
//! Memory DataFusion does not account for (our table scans' decoded rows, operators that do not
//! reserve) is outside the bound.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// Where a query's spill files go, under the data dir; emptied at start (files of a crashed run).
const SPILL_DIR: &str = "tmp";

/// Used when the machine's memory cannot be read.
const FALLBACK_MEMORY: u64 = 8 << 30;

/// The runtime for a pool of `limit` bytes, spilling under `data_dir`.
pub fn build(data_dir: &Path, limit: u64) -> anyhow::Result<Arc<RuntimeEnv>> {
    let spill = data_dir.join(SPILL_DIR);
    if spill.exists() {
        std::fs::remove_dir_all(&spill)
            .with_context(|| format!("cannot empty the spill directory {}", spill.display()))?;
    }
    std::fs::create_dir_all(&spill)
        .with_context(|| format!("cannot create the spill directory {}", spill.display()))?;
    let size = usize::try_from(limit).unwrap_or(usize::MAX);
    let top = NonZeroUsize::new(3).context("three is not zero")?;
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(size),
            top,
        )))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill])),
        )
        .build_arc()
        .context("cannot build the query runtime")
}

/// Reads a memory flag (`flag`, `--query-memory` say): bytes (`1073741824`), a size with Postgres' or IEC units (`512MB`,
/// `2GiB`; 1 kB is 1024 bytes, as in Postgres), or a percentage of the machine's memory (`25%`).
pub fn parse_memory(flag: &str, text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent
            .trim()
            .parse()
            .with_context(|| format!("invalid {flag} {text:?}"))?;
        if !(percent > 0.0 && percent <= 100.0) {
            bail!("invalid {flag} {text:?}: a percentage must be in (0, 100]");
        }
        let total = machine_memory().unwrap_or(FALLBACK_MEMORY);
        return Ok((total as f64 * percent / 100.0) as u64);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("invalid {flag} {text:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" | "kib" => 10,
        "mb" | "mib" => 20,
        "gb" | "gib" => 30,
        "tb" | "tib" => 40,
        _ => bail!("invalid {flag} {text:?}: units are kB, MB, GB, TB (or KiB, ...)"),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .with_context(|| format!("{flag} {text:?} is too large"))?;
    if bytes == 0 {
        bail!("{flag} must be more than 0");
    }
    Ok(bytes)
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo).
fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_as_in_postgres() {
        assert_eq!(parse_memory("--query-memory", "1024").ok(), Some(1024));
        assert_eq!(
            parse_memory("--query-memory", "512MB").ok(),
            Some(512 << 20)
        );
        assert_eq!(parse_memory("--query-memory", "2GiB").ok(), Some(2 << 30));
        assert_eq!(parse_memory("--query-memory", "64 kB").ok(), Some(64 << 10));
        assert!(parse_memory("--query-memory", "25%").is_ok_and(|b| b > 0));
        assert!(parse_memory("--query-memory", "0").is_err());
        assert!(parse_memory("--query-memory", "150%").is_err());
        assert!(parse_memory("--query-memory", "lots").is_err());
    }
}
