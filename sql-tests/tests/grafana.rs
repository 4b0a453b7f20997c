//! The Grafana dashboard and Prometheus configuration of docker-compose.yml, checked without
//! Docker (no image runs here): the dashboard is valid JSON whose every Prometheus query names
//! metrics the real binary exports and whose every SQL query runs against it; the provisioning
//! files and mounts point at files that exist; Prometheus scrapes the address and credentials
//! the rivulet service serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use rivulet_sql_tests::TestServer;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// The sample names `/metrics` exposes, from its `# TYPE` lines (counters end in `_total`,
/// histograms have `_bucket`, `_sum`, `_count`).
async fn exported(port: u16) -> BTreeSet<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The metric names a PromQL expression uses: identifiers that start with `rivulet_` or
/// `process_` (every metric Rivulet exports does), outside label matchers' quotes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("rivulet_") || word.starts_with("process_") {
            out.push(word.clone());
        }
        word.clear();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_name_exported_metrics_and_run_on_rivulet() {
    let dashboard: Value =
        serde_json::from_str(&read("docker/grafana/dashboards/rivulet.json")).expect("valid JSON");
    let server = TestServer::start().await.unwrap();
    let names = exported(server.http_port.unwrap()).await;
    assert!(
        names.contains("rivulet_operator_records_in_total"),
        "{names:?}"
    );
    let client = server.connect("dev").await.unwrap();
    let datasources = yaml("docker/grafana/provisioning/datasources/datasources.yml");
    let uids: BTreeSet<String> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap().to_string())
        .collect();
    let (mut promql, mut sql) = (0, 0);
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let source = &target["datasource"]["uid"];
            assert!(
                uids.contains(source.as_str().unwrap()),
                "panel {title}: unknown data source {source}"
            );
            if let Some(expr) = target["expr"].as_str() {
                let used = metric_names(expr);
                assert!(!used.is_empty(), "panel {title}: no metric in {expr}");
                for name in used {
                    assert!(
                        names.contains(&name),
                        "panel {title}: {name} is not exported"
                    );
                }
                promql += 1;
            }
            if let Some(query) = target["rawSql"].as_str() {
                client
                    .simple_query(query)
                    .await
                    .unwrap_or_else(|e| panic!("panel {title}: {query}: {e}"));
                sql += 1;
            }
        }
    }
    assert!(
        promql >= 10 && sql >= 2,
        "{promql} PromQL and {sql} SQL queries"
    );
    // The job variable reads a label every job metric has.
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(variable["name"], "job");
    for name in metric_names(variable["definition"].as_str().unwrap()) {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn compose_provisions_grafana_and_prometheus_from_files_that_exist() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let mounts = |service: &str| -> Vec<(String, String)> {
        services[service]["volumes"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{service} has no volumes"))
            .iter()
            .map(|v| {
                let mut parts = v.as_str().unwrap().split(':');
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Prometheus reads docker/prometheus.yml, which scrapes the rivulet service's HTTP port
    // with its password.
    let prometheus = mounts("prometheus");
    assert!(prometheus.contains(&(
        "./docker/prometheus.yml".into(),
        "/etc/prometheus/prometheus.yml".into()
    )));
    let config = yaml("docker/prometheus.yml");
    let scrape = &config["scrape_configs"][0];
    let target = scrape["static_configs"][0]["targets"][0].as_str().unwrap();
    let rivulet = &services["rivulet"]["environment"];
    let listen = rivulet["RIVULET_HTTP_LISTEN"].as_str().unwrap();
    let port = listen.rsplit_once(':').unwrap().1;
    assert_eq!(target, format!("rivulet:{port}"));
    let password = rivulet["RIVULET_PASSWORD"].as_str().unwrap();
    assert_eq!(password, "${RIVULET_PASSWORD:-rivulet}");
    assert_eq!(scrape["basic_auth"]["username"], "root");
    assert_eq!(scrape["basic_auth"]["password"], "rivulet");
    assert_eq!(scrape["metrics_path"], "/metrics");

    // Grafana: the provisioning directory and the dashboards directory are mounted, and the
    // dashboard provider's path is where the dashboards are.
    let grafana = mounts("grafana");
    let mounted = |target: &str| -> PathBuf {
        let (source, _) = grafana
            .iter()
            .find(|(_, t)| t == target)
            .unwrap_or_else(|| panic!("grafana does not mount {target}"));
        let path = root().join(source);
        assert!(path.exists(), "{source} does not exist");
        path
    };
    let provisioning = mounted("/etc/grafana/provisioning");
    assert!(provisioning.join("datasources/datasources.yml").is_file());
    let providers: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(provisioning.join("dashboards/dashboards.yml")).unwrap(),
    )
    .unwrap();
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let dashboards = mounted(path);
    assert!(dashboards.join("rivulet.json").is_file());

    // The data sources: Prometheus at the prometheus service, Rivulet at the rivulet service's
    // Postgres port with its password.
    let datasources: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(provisioning.join("datasources/datasources.yml")).unwrap(),
    )
    .unwrap();
    let list = datasources["datasources"].as_sequence().unwrap();
    let by_type = |t: &str| {
        list.iter()
            .find(|d| d["type"].as_str() == Some(t))
            .unwrap_or_else(|| panic!("no {t} data source"))
    };
    assert_eq!(by_type("prometheus")["url"], "http://prometheus:9090");
    let pg = by_type("grafana-postgresql-datasource");
    assert_eq!(pg["url"], "rivulet:4566");
    assert_eq!(pg["user"], "root");
    assert_eq!(pg["secureJsonData"]["password"], "rivulet");
    assert!(services["prometheus"]["ports"].as_sequence().is_some());
}

#[test]
fn metric_names_skip_label_values_and_functions() {
    assert_eq!(
        metric_names(r#"sum by (job) (rate(rivulet_job_records_in_total{job=~"rivulet_x"}[1m]))"#),
        ["rivulet_job_records_in_total"]
    );
}
