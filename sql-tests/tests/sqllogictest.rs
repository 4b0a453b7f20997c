//! Runs every `sql-tests/**/*.slt` file against one real `rivulet` server, once over the simple and
//! once over the extended query protocol, each run in a database of its own so files run in
//! parallel. `RIVULET_SLT_COMPLETE=1` rewrites the files with the actual output (review the diff).
//! Arguments filter files by substring.
//!
//! Files may use a Kafka broker: lines `# kafka-topic <name> <partitions>` and
//! `# kafka-record <topic> <partition> <value>` make the runner start one (Tansu, see
//! `rivulet_sql_tests::kafka`), create the topics and produce the records before any file runs;
//! `${KAFKA}` in a file (with `control substitution on`) is its bootstrap address, and
//! `${DATABASE}` the run's database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rivulet_sql_tests::{Postgres, Protocol, TestServer};
use sqllogictest::{Runner, default_column_validator, default_normalizer, default_validator};

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            slt_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}

fn database_name(root: &Path, file: &Path, protocol: Protocol) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
    let base = rivulet_sql_tests::identifier(&rel.to_string_lossy());
    format!(
        "slt_{base}_{}",
        if protocol == Protocol::Simple {
            "s"
        } else {
            "x"
        }
    )
}

/// Starts a broker with the topics and records `files` ask for, if any do.
async fn kafka_for(files: &[PathBuf]) -> Option<rivulet_sql_tests::kafka::Broker> {
    let mut topics = Vec::new();
    let mut records: Vec<(String, i32, String)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# kafka-topic ") {
                let mut w = rest.split_whitespace();
                if let (Some(name), Some(n)) = (w.next(), w.next()) {
                    topics.push((name.to_string(), n.parse::<u32>().expect("partitions")));
                }
            } else if let Some(rest) = line.strip_prefix("# kafka-record ") {
                let mut w = rest.splitn(3, ' ');
                if let (Some(t), Some(p), Some(v)) = (w.next(), w.next(), w.next()) {
                    records.push((t.to_string(), p.parse().expect("partition"), v.to_string()));
                }
            }
        }
    }
    if topics.is_empty() {
        return None;
    }
    let broker = rivulet_sql_tests::kafka::Broker::start()
        .await
        .expect("kafka broker starts");
    for (name, partitions) in &topics {
        broker.create_topic(name, *partitions).await.expect("topic");
    }
    let producer = broker.producer().expect("producer");
    for (topic, partition, value) in &records {
        producer
            .send_values(topic, *partition, std::slice::from_ref(value))
            .expect("produce");
    }
    Some(broker)
}

async fn run_file(
    server: &TestServer,
    root: &Path,
    file: &Path,
    protocol: Protocol,
    kafka: Option<String>,
) -> Result<(), String> {
    let db = database_name(root, file, protocol);
    let db_name = db.clone();
    let admin = server.connect("dev").await.map_err(|e| e.to_string())?;
    admin
        .simple_query(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .map_err(|e| e.to_string())?;
    admin
        .simple_query(&format!("CREATE DATABASE {db}"))
        .await
        .map_err(|e| e.to_string())?;
    let port = server.port;
    let make = move || {
        let db = db.clone();
        async move {
            let conn_str = format!("host=127.0.0.1 port={port} user=root dbname={db}");
            let (client, connection) =
                tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
            rivulet_sql_tests::drive(connection);
            Ok::<_, rivulet_sql_tests::PgError>(Postgres::new(client, protocol))
        }
    };
    let mut runner = Runner::new(make);
    runner.add_label("rivulet");
    // `onlyif simple` / `onlyif extended`: where the text format (simple) and the binary results
    // the extended runs ask for differ.
    runner.add_label(match protocol {
        Protocol::Simple => "simple",
        Protocol::Extended => "extended",
    });
    if let Some(k) = kafka {
        runner.set_var("KAFKA".into(), k);
    }
    // The run's database: what a file uses to keep outside names (consumer groups) apart.
    runner.set_var("DATABASE".into(), db_name.clone());
    runner.with_hash_threshold(0);
    if std::env::var("RIVULET_SLT_COMPLETE").is_ok() && protocol == Protocol::Simple {
        return runner
            .update_test_file(
                file,
                " ",
                default_validator,
                default_normalizer,
                default_column_validator,
            )
            .await
            .map_err(|e| e.to_string());
    }
    let run = runner.run_file_async(file);
    match tokio::time::timeout(Duration::from_secs(300), run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.display(true).to_string()),
        Err(_) => Err("timed out after 300 s".into()),
    }
}

#[tokio::main]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    files.retain(|f| {
        filters.is_empty()
            || filters
                .iter()
                .any(|flt| f.to_string_lossy().contains(flt.as_str()))
    });
    files.sort();
    let server = TestServer::start().await.expect("server starts");
    let broker = kafka_for(&files).await;
    let kafka = broker.as_ref().map(|b| b.bootstrap());
    let complete = std::env::var("RIVULET_SLT_COMPLETE").is_ok();
    let protocols: &[Protocol] = if complete {
        &[Protocol::Simple]
    } else {
        &[Protocol::Simple, Protocol::Extended]
    };
    let mut jobs = Vec::new();
    for file in &files {
        for &protocol in protocols {
            jobs.push((file.clone(), protocol));
        }
    }
    let results = futures::future::join_all(jobs.iter().map(|(file, protocol)| {
        let (server, root, kafka) = (&server, &root, kafka.clone());
        async move {
            (
                file,
                *protocol,
                run_file(server, root, file, *protocol, kafka).await,
            )
        }
    }))
    .await;
    let mut failed = 0;
    for (file, protocol, result) in &results {
        let name = file.strip_prefix(&root).unwrap_or(file).display();
        match result {
            Ok(()) => println!("ok     {name} ({protocol:?})"),
            Err(e) => {
                failed += 1;
                println!("FAILED {name} ({protocol:?})\n{e}\n");
            }
        }
    }
    println!("{} runs, {failed} failed", results.len());
    // `exit` skips destructors: stop the server and the broker first.
    drop(server);
    if let Some(mut b) = broker {
        let _ = b.stop().await;
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
