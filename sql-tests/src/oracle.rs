//! The oracle property of the randomized view tests (`tests/*_oracle.rs`): after random
//! INSERT/UPDATE/DELETE and a FLUSH, every materialized view equals DataFusion's batch answer to
//! its own query over the tables' current rows, at parallelism 1 and more, and still does after
//! the server is killed with SIGKILL in the middle of the changes and restarted.
//!
//! A seed decides everything: its statements, its parallelism (1 or 3 instances per keyed
//! stage) and how the server caches state (every other pair of seeds runs with
//! `--state-cache-mb 0`, so every state read goes to RocksDB or the epochs not committed yet; one
//! seed in four with all caches sharing 64 kB of `--state-memory`, so they shrink all the time).
//! `RIVULET_ORACLE_SEED=<n>` replays one seed; a failure names its seed, round and view.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::{TestServer, sorted_rows};

/// One randomized oracle test.
pub struct Oracle<'a> {
    /// Statements creating the tables.
    pub setup: &'a str,
    /// (name, query) of each view.
    pub views: &'a [(&'a str, &'a str)],
    /// A random DML statement; the counter is the last id inserted.
    pub statement: fn(&mut StdRng, &mut i32) -> String,
    /// Rounds of 40 statements, each followed by FLUSH and a comparison; every other round
    /// kills the server first.
    pub rounds: usize,
    /// Fewer view rows than this in a round means the views test nothing.
    pub min_rows: usize,
}

/// The seeds to run: `RIVULET_ORACLE_SEED`, or `default`.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("RIVULET_ORACLE_SEED") {
        Ok(s) => vec![s.parse().expect("RIVULET_ORACLE_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

/// A random value in `0..below` as SQL text, or `NULL` one time in ten.
pub fn nullable(rng: &mut StdRng, below: i64) -> String {
    if rng.random_bool(0.1) {
        "NULL".to_string()
    } else {
        rng.random_range(0..below).to_string()
    }
}

/// Instances per keyed stage for a seed: results must not depend on it.
fn parallelism(seed: u64) -> u64 {
    [1, 3][(seed % 2) as usize]
}

/// Server flags for a seed: results must not depend on the state cache either.
fn flags(seed: u64) -> &'static [&'static str] {
    match seed % 4 {
        2 | 3 => &["--state-cache-mb", "0"],
        // All caches share 64 kB: each shrinks to its share at every checkpoint.
        1 => &["--state-memory", "64kB"],
        _ => &[],
    }
}

impl Oracle<'_> {
    /// Runs seed `seed`; panics naming the seed, round and view on a difference.
    pub async fn run(&self, seed: u64) {
        let dir = tempfile::tempdir().expect("temporary dir");
        let start = || TestServer::start_with(dir.path(), flags(seed));
        let mut server = start().await.expect("server starts");
        let mut c = server.connect("dev").await.expect("connects");
        c.batch_execute(self.setup).await.expect("tables");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_id = 0;
        // Some rows before the views exist, so that backfill is part of the property.
        self.statements(&c, &mut rng, &mut next_id, seed).await;
        let p = parallelism(seed);
        c.batch_execute(&format!("SET streaming_parallelism = {p}"))
            .await
            .expect("parallelism");
        for (name, query) in self.views {
            c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
                .await
                .unwrap_or_else(|e| panic!("view {name}: {}", crate::PgError::from(e)));
        }
        for round in 0..self.rounds {
            self.statements(&c, &mut rng, &mut next_id, seed).await;
            if round % 2 == 1 {
                // Killed while the jobs are busy with the last changes: recovery replays them.
                server.kill9().await.expect("kill");
                server = start().await.expect("server restarts");
                c = server.connect("dev").await.expect("connects");
            }
            c.batch_execute("FLUSH").await.expect("flush");
            self.compare(&c, seed, p, round).await;
        }
        server.kill9().await.expect("kill");
    }

    async fn statements(&self, c: &Client, rng: &mut StdRng, next_id: &mut i32, seed: u64) {
        for _ in 0..40 {
            let sql = (self.statement)(rng, next_id);
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {sql}: {}", crate::PgError::from(e)));
        }
    }

    async fn compare(&self, c: &Client, seed: u64, p: u64, round: usize) {
        let mut compared = 0;
        for (name, query) in self.views {
            let view = sorted_rows(c, &format!("SELECT * FROM {name}"))
                .await
                .expect("view rows");
            let oracle = sorted_rows(c, query).await.expect("query rows");
            assert_eq!(
                view, oracle,
                "seed {seed} (parallelism {p}), round {round}: view {name} differs from its query"
            );
            compared += view.len();
        }
        eprintln!("seed {seed} (parallelism {p}), round {round}: {compared} view rows equal");
        assert!(
            compared > self.min_rows,
            "seed {seed}: the views are nearly empty"
        );
    }
}
