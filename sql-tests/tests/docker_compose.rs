//! The Docker demo (docker-compose.yml, the Dockerfile, docker/) checked without Docker, which
//! neither the developers' machines nor CI have: the services, Kafka addresses, topic, ports and
//! volumes agree across the compose file, docker/init.sql and the producer; the image runs the
//! binary with flags it has; and the records docker/producer.py writes fill the view docker/init.sql
//! declares, read from the Tansu test broker. What stays unchecked is what needs Docker itself:
//! pulling and building the images, and the Kafka image's configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rivulet_sql_tests::dockerfile::{exposed_ports, instructions, last, runtime_stage};
use rivulet_sql_tests::kafka::{Broker, Record};
use rivulet_sql_tests::{TestServer, rivulet_bin, sorted_rows, text_rows};
use serde_yaml::{Mapping, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file of the repository, by its path from the root.
fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docker-compose.yml, parsed.
fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn services(compose: &Value) -> &Mapping {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
}

/// A scalar as text, `${NAME:-default}` replaced by its default (the variable is assumed unset).
fn text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    };
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, default)| default.to_string())
            .unwrap_or_default(),
        None => s,
    }
}

/// A service's environment (a mapping, or a list of `NAME=value`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let i = text(i);
                let (k, v) = i.split_once('=').unwrap_or((&i, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A list field whose items are written as text (`command`, `volumes`, `ports`).
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => text(other).split_whitespace().map(str::to_string).collect(),
    }
}

/// The word after `flag` in `words`.
fn after<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    let i = words.iter().position(|w| w == flag)?;
    words.get(i + 1).map(String::as_str)
}

/// The services `service` depends on, with the condition it waits for.
fn depends_on(service: &Value) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Value::Sequence(names) => names
            .iter()
            .map(|n| (text(n), "service_started".to_string()))
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(name, how)| {
                let condition = match how.get("condition") {
                    Some(c) => text(c),
                    None => "service_started".to_string(),
                };
                (text(name), condition)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Kafka's address for the other services: the host and port of its advertised PLAINTEXT listener.
fn kafka_bootstrap(compose: &Value) -> String {
    let env = environment(&services(compose)["kafka"]);
    let advertised = &env["KAFKA_ADVERTISED_LISTENERS"];
    advertised
        .split(',')
        .find_map(|l| l.strip_prefix("PLAINTEXT://"))
        .unwrap_or_else(|| panic!("no PLAINTEXT listener in {advertised}"))
        .to_string()
}

/// The value of `'option' = 'value'` in SQL text.
fn sql_option(sql: &str, option: &str) -> String {
    let (_, rest) = sql
        .split_once(&format!("'{option}' = '"))
        .unwrap_or_else(|| panic!("no '{option}' in docker/init.sql"));
    rest.split('\'').next().unwrap().to_string()
}

#[test]
fn services_run_something_and_wait_for_services_that_exist() {
    let compose = compose();
    let services = services(&compose);
    let volumes = compose["volumes"].as_mapping().cloned().unwrap_or_default();
    for (name, service) in services {
        let name = text(name);
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "service {name} has neither image nor build"
        );
        for (target, condition) in depends_on(service) {
            let Some(dependency) = services.get(target.as_str()) else {
                panic!("service {name} depends on {target}, which is not a service");
            };
            match condition.as_str() {
                "service_started" => {}
                "service_healthy" => assert!(
                    dependency.get("healthcheck").is_some(),
                    "service {name} waits for {target} to be healthy, which has no healthcheck"
                ),
                // A one-off job: restarting it would keep its dependents waiting.
                "service_completed_successfully" => assert!(
                    dependency.get("restart").is_none(),
                    "service {name} waits for {target} to complete, which restarts"
                ),
                other => panic!("service {name}: unknown depends_on condition {other}"),
            }
        }
        for volume in words(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    root().join(source).exists(),
                    "service {name} mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    volumes.contains_key(source),
                    "service {name} mounts volume {source}, which is not declared"
                );
            }
        }
        if let Some(build) = service.get("build") {
            let (context, dockerfile) = match build {
                Value::Mapping(m) => (
                    m.get("context").map_or(".".into(), text),
                    m.get("dockerfile").map_or("Dockerfile".into(), text),
                ),
                other => (text(other), "Dockerfile".to_string()),
            };
            assert!(
                root().join(&context).join(&dockerfile).is_file(),
                "service {name} builds from {context}/{dockerfile}, which does not exist"
            );
        }
    }
}

#[test]
fn kafka_address_and_topic_agree_everywhere() {
    let compose = compose();
    let services = services(&compose);
    let bootstrap = kafka_bootstrap(&compose);
    let (host, port) = bootstrap.split_once(':').unwrap();
    // The advertised host is what clients connect to after bootstrapping: it must be the service's
    // name on the compose network, and the broker must listen on that port.
    assert_eq!(host, "kafka");
    let kafka = environment(&services["kafka"]);
    assert!(
        kafka["KAFKA_LISTENERS"]
            .split(',')
            .any(|l| l.starts_with("PLAINTEXT://") && l.ends_with(&format!(":{port}"))),
        "KAFKA_LISTENERS has no PLAINTEXT listener on port {port}"
    );
    let voter = format!("{}@kafka:", kafka["KAFKA_NODE_ID"]);
    assert!(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].starts_with(&voter));
    let healthcheck = words(&services["kafka"]["healthcheck"]["test"]);
    assert_eq!(
        after(&healthcheck, "--bootstrap-server"),
        Some(format!("localhost:{port}").as_str())
    );

    let sql = read("docker/init.sql");
    assert_eq!(sql_option(&sql, "properties.bootstrap.servers"), bootstrap);
    let topic = sql_option(&sql, "topic");

    let init = words(&services["init-topics"]["command"]);
    assert_eq!(after(&init, "--bootstrap-server"), Some(bootstrap.as_str()));
    assert_eq!(after(&init, "--topic"), Some(topic.as_str()));

    let producer = &services["producer"];
    let env = environment(producer);
    assert_eq!(env["BOOTSTRAP_SERVERS"], bootstrap);
    assert_eq!(env["TOPIC"], topic);
    assert!(env["RATE"].parse::<f64>().unwrap() > 0.0);
    // The script the producer runs is the one mounted from docker/.
    let mount = words(&producer["volumes"])
        .into_iter()
        .find(|v| v.starts_with("./docker/producer.py:"))
        .expect("docker/producer.py is mounted into the producer");
    let target = mount.split(':').nth(1).unwrap();
    let command = words(&producer["command"]).join(" ");
    assert!(
        command.contains(&format!("python {target}")),
        "the producer does not run {target}: {command}"
    );
}

#[test]
fn rivulet_image_runs_the_binary_with_flags_it_has() {
    let dockerfile = read("Dockerfile");
    let instructions = instructions(&dockerfile);
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap())
        .collect();
    // The builder's Rust is the workspace's rust-version; builder and runtime are the same Debian
    // release, so that the runtime's librocksdb is the one the binary was linked against.
    let cargo = read("Cargo.toml");
    let rust_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let (builder, runtime) = (froms[0], froms[froms.len() - 1]);
    let release = builder
        .strip_prefix(&format!("rust:{rust_version}-"))
        .unwrap_or_else(|| panic!("the builder {builder} is not rust:{rust_version}-<debian>"));
    assert!(
        runtime.starts_with(&format!("debian:{release}")),
        "the runtime {runtime} is not Debian {release}"
    );

    // The runtime stage's CMD, in exec form (a JSON array, which YAML reads too).
    let stage = runtime_stage(&instructions);
    let last = |keyword: &str| {
        last(stage, keyword)
            .unwrap_or_else(|| panic!("no {keyword} in the Dockerfile's runtime stage"))
            .to_string()
    };
    let cmd: Vec<String> = serde_yaml::from_str(&last("CMD")).expect("CMD in exec form");
    assert_eq!(cmd[0], "rivulet");
    let help = Command::new(rivulet_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in cmd.iter().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "the Dockerfile runs rivulet with {flag}, which `rivulet --help` does not list"
        );
    }
    let listen = after(&cmd, "--listen").expect("--listen in CMD");
    let (address, port) = listen.rsplit_once(':').unwrap();
    let exposed = exposed_ports(stage);
    assert!(
        exposed.contains(&port.parse().unwrap()),
        "the Dockerfile exposes {exposed:?}, not {port}"
    );

    let compose = compose();
    let rivulet = &services(&compose)["rivulet"];
    let ports = words(&rivulet["ports"]);
    assert!(
        ports.contains(&format!("127.0.0.1:{port}:{port}")),
        "{ports:?}"
    );
    // The server refuses a non-loopback address without a password.
    let env = environment(rivulet);
    let password = env.get("RIVULET_PASSWORD").cloned().unwrap_or_default();
    if !address.starts_with("127.") {
        assert!(
            !password.is_empty(),
            "rivulet listens on {address} without RIVULET_PASSWORD"
        );
    }
    // The HTTP endpoint (dashboard, /metrics): exposed by the image, published on loopback.
    let http = &env["RIVULET_HTTP_LISTEN"];
    let (_, http_port) = http.rsplit_once(':').unwrap();
    assert!(
        exposed.contains(&http_port.parse().unwrap()),
        "the Dockerfile exposes {exposed:?}, not {http_port}"
    );
    assert!(
        ports.contains(&format!("127.0.0.1:{http_port}:{http_port}")),
        "{ports:?}"
    );
    let data_dir = after(&cmd, "--data-dir").expect("--data-dir in CMD");
    assert!(
        words(&rivulet["volumes"]).contains(&format!("rivulet-data:{data_dir}")),
        "the data dir {data_dir} is not in a volume"
    );
    // The way in that the README and docker/init.sql show.
    let psql = format!("PGPASSWORD={password} psql -h 127.0.0.1 -p {port} -U root dev");
    assert!(read("README.md").contains(&psql), "README.md lacks {psql}");
    assert!(
        read("docker/init.sql").contains(&psql),
        "docker/init.sql lacks {psql}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_records_fill_the_view_of_init_sql() {
    // 1,200 bids 100 ms apart in event time: two minutes and a bit, three windows of a minute.
    let printed = match Command::new("python3")
        .arg(root().join("docker/producer.py"))
        .args(["--print", "1200"])
        .env("RATE", "10")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("python3 not found ({e}); scripts/deps-compat needs it too");
            return;
        }
    };
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = String::from_utf8(printed.stdout).unwrap();
    let records: Vec<Record<'_>> = printed
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('\t').unwrap();
            Record {
                partition: (key.parse::<u64>().unwrap() % 3) as i32,
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                ..Record::default()
            }
        })
        .collect();
    assert_eq!(records.len(), 1200);
    // Event times as the producer wrote them; this text form sorts as time does.
    let times: Vec<&str> = printed
        .lines()
        .map(|line| {
            line.split("\"ts\": \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    let mut minutes: Vec<&str> = times.iter().map(|t| &t[..16]).collect();
    minutes.sort_unstable();
    minutes.dedup();
    assert!(minutes.len() >= 3, "{minutes:?}");

    let compose = compose();
    let bootstrap = kafka_bootstrap(&compose);
    let sql = read("docker/init.sql");
    let topic = sql_option(&sql, "topic");
    let broker = Broker::start().await.unwrap();
    broker.create_topic(&topic, 3).await.unwrap();
    broker.producer().unwrap().send(&topic, &records).unwrap();

    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    // The compose network's broker address becomes the test broker's.
    let broker_option = format!("'{bootstrap}'");
    assert!(sql.contains(&broker_option));
    let sql = sql.replace(&broker_option, &format!("'{}'", broker.bootstrap()));
    client.batch_execute(&sql).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), client.batch_execute("FLUSH"))
        .await
        .expect("FLUSH within 60 s")
        .unwrap();

    // Every record decoded, every column filled (a field the producer names differently from the
    // table would be NULL), event times with their milliseconds.
    assert_eq!(
        text_rows(
            &client,
            &format!(
                "SELECT count(*), count(auction), count(bidder), count(price), count(ts), \
                   min(ts) = TIMESTAMP '{first}', max(ts) = TIMESTAMP '{last}' FROM bids"
            )
        )
        .await
        .unwrap(),
        ["1200|1200|1200|1200|1200|t|t"]
    );
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM rivulet_dead_letters")
            .await
            .unwrap(),
        ["0"]
    );
    // The view equals its own query answered over the topic in one batch.
    let (_, query) = sql
        .split_once("CREATE MATERIALIZED VIEW bids_per_minute AS")
        .unwrap();
    let query = query.split(';').next().unwrap();
    let view = sorted_rows(&client, "SELECT * FROM bids_per_minute")
        .await
        .unwrap();
    assert_eq!(view, sorted_rows(&client, query).await.unwrap());
    assert_eq!(
        text_rows(
            &client,
            "SELECT sum(bids), count(DISTINCT window_start) FROM bids_per_minute"
        )
        .await
        .unwrap(),
        [format!("1200|{}", minutes.len())]
    );
}
