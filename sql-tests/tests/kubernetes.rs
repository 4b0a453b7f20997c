//! The Kubernetes manifests (deploy/kubernetes/) checked without a cluster, which neither the
//! developers' machines nor CI have. kubectl's kustomize renders them offline (what `kubectl apply
//! -k` would send: exactly the folder's files, the image settable through the kustomization); every
//! resource validates strictly (no unknown field) against Kubernetes' OpenAPI schemas of the oldest
//! and the newest version named below, with kubernetes-validate, which bundles them and needs no
//! network; and the manifests agree with each other, with the Dockerfile and with the binary's
//! flags: ports, Services, probes, environment, password, data dir, user and shutdown time.
//! `scripts/deps` installs both tools; a missing one fails the test. What stays unchecked needs a
//! cluster: the image pulled, the volume provisioned, the probes answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rivulet_sql_tests::dockerfile::{exposed_ports, instructions, last, runtime_stage};
use rivulet_sql_tests::rivulet_bin;
use serde_yaml::Value;

/// The Kubernetes versions the manifests are validated against: the oldest they are meant for and
/// the newest the pinned kubernetes-validate bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// What the StatefulSet must set: addresses a Service can reach, the volume's data dir, the
/// password a non-loopback address needs, and the shutdown bound the grace period covers.
const REQUIRED_ENV: [&str; 5] = [
    "RIVULET_LISTEN",
    "RIVULET_HTTP_LISTEN",
    "RIVULET_DATA_DIR",
    "RIVULET_PASSWORD",
    "RIVULET_SHUTDOWN_TIMEOUT_MS",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifests_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kustomization() -> Value {
    serde_yaml::from_str(&read(&manifests_dir().join("kustomization.yaml")))
        .expect("kustomization.yaml is YAML")
}

/// The files kustomization.yaml lists as resources.
fn resource_files(kustomization: &Value) -> Vec<String> {
    kustomization["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(text)
        .collect()
}

/// The resources, one per file.
fn resources() -> Vec<Value> {
    resource_files(&kustomization())
        .iter()
        .map(|file| {
            serde_yaml::from_str(&read(&manifests_dir().join(file)))
                .unwrap_or_else(|e| panic!("{file}: one YAML document: {e}"))
        })
        .collect()
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["kind"] == kind).collect()
}

fn statefulset(resources: &[Value]) -> &Value {
    match of_kind(resources, "StatefulSet")[..] {
        [one] => one,
        ref all => panic!("{} StatefulSets, not one", all.len()),
    }
}

/// The StatefulSet's one container.
fn container(statefulset: &Value) -> &Value {
    match statefulset["spec"]["template"]["spec"]["containers"].as_sequence() {
        Some(containers) if containers.len() == 1 => &containers[0],
        other => panic!("not one container: {other:?}"),
    }
}

/// A scalar as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn number(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {v:?}"))
}

/// A mapping of scalars (labels, annotations, a selector) as text.
fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| m.iter().map(|(k, v)| (text(k), text(v))).collect())
        .unwrap_or_default()
}

/// The container's environment entries, by name.
fn env(container: &Value) -> BTreeMap<String, &Value> {
    container["env"]
        .as_sequence()
        .expect("the container has an env list")
        .iter()
        .map(|e| (text(&e["name"]), e))
        .collect()
}

/// An environment variable's literal value.
fn env_value(container: &Value, name: &str) -> String {
    let entry = env(container)
        .remove(name)
        .unwrap_or_else(|| panic!("the container does not set {name}"));
    text(&entry["value"])
}

/// The container's ports, by name.
fn container_ports(container: &Value) -> BTreeMap<String, u16> {
    container["ports"]
        .as_sequence()
        .expect("the container has ports")
        .iter()
        .map(|p| {
            let port = u16::try_from(number(&p["containerPort"])).unwrap();
            (text(&p["name"]), port)
        })
        .collect()
}

/// A port as a probe or a Service's targetPort names it: a number, or the name of a container port.
fn resolve(port: &Value, ports: &BTreeMap<String, u16>) -> u16 {
    match port {
        Value::Number(n) => u16::try_from(n.as_u64().unwrap()).unwrap(),
        Value::String(name) => *ports
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("not a port: {other:?}"),
    }
}

/// The port of a `host:port` address.
fn port_of(address: &str) -> u16 {
    let (_, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address} is not host:port"));
    port.parse().unwrap()
}

/// Every pair of `selector` is among `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The word after `flag` in the words of `text`.
fn after<'a>(text: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

/// The stream `kubectl apply -k dir` sends, rendered offline by kubectl's kustomize.
fn render(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}: run scripts/deps"));
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a YAML stream.
fn documents(stream: &str) -> Vec<Value> {
    stream
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}")))
        .collect()
}

/// kubernetes-validate, from the compat venv of scripts/deps-compat.
fn validator() -> PathBuf {
    let dir = std::env::var_os("RIVULET_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rivulet-compat")
        });
    dir.join("venv/bin/kubernetes-validate")
}

#[test]
fn kustomization_renders_the_folder_s_files() {
    let kustomization = kustomization();
    assert_eq!(
        kustomization["apiVersion"],
        "kustomize.config.k8s.io/v1beta1"
    );
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed = resource_files(&kustomization);
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "listed twice: {listed:?}");
    let in_folder: BTreeSet<String> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(
        unique, in_folder,
        "kustomization.yaml's resources are not the folder's files"
    );
    // What `kubectl apply -k` sends is the files as they are, so the other tests check that.
    // (Mappings compare regardless of key order, which kustomize sorts.)
    let by_kind_and_name = |r: &Value| format!("{:?}/{:?}", r["kind"], r["metadata"]["name"]);
    let mut rendered = documents(&render(&manifests_dir()));
    let mut files = resources();
    rendered.sort_by_key(by_kind_and_name);
    files.sort_by_key(by_kind_and_name);
    assert_eq!(rendered, files);
    assert!(read(&root().join("README.md")).contains("kubectl apply -k deploy/kubernetes"));
}

#[test]
fn the_image_is_set_through_the_kustomization() {
    // `kustomize edit set image rivulet=registry.example.com/rivulet:1.0`, as README.md says, on a
    // copy of the folder.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(manifests_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let mut kustomization = kustomization();
    let images = kustomization["images"]
        .as_sequence_mut()
        .expect("kustomization.yaml has images");
    let [image] = &mut images[..] else {
        panic!("not one image: {images:?}")
    };
    let resources = resources();
    let current = text(&container(statefulset(&resources))["image"]);
    let (name, _tag) = current.split_once(':').unwrap_or((&current, ""));
    assert_eq!(
        image["name"], name,
        "images does not name the container's image"
    );
    image["newName"] = Value::from("registry.example.com/rivulet");
    image["newTag"] = Value::from("1.0");
    std::fs::write(
        copy.path().join("kustomization.yaml"),
        serde_yaml::to_string(&kustomization).unwrap(),
    )
    .unwrap();
    let rendered = documents(&render(copy.path()));
    assert_eq!(
        container(statefulset(&rendered))["image"],
        "registry.example.com/rivulet:1.0"
    );
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let validator = validator();
    assert!(
        validator.exists(),
        "{} missing: run scripts/deps (scripts/deps-compat installs kubernetes-validate)",
        validator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, render(&manifests_dir())).unwrap();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validator)
            .arg("--strict")
            .args(["--kubernetes-version", version])
            .arg(&rendered)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A kind without a schema (a typo, an API group the version lacks) is only a warning.
        assert!(
            out.status.success() && !report.contains("WARN") && !report.contains("ERROR"),
            "kubernetes-validate {version}:\n{report}"
        );
        for resource in resources() {
            let kind = text(&resource["kind"]).to_lowercase();
            let name = text(&resource["metadata"]["name"]);
            assert!(
                report.contains(&format!("passed for resource {kind}/{name} against")),
                "{kind}/{name} not validated against {version}:\n{report}"
            );
        }
    }
}

#[test]
fn ports_probes_and_services_agree_with_the_dockerfile() {
    let resources = resources();
    let statefulset = statefulset(&resources);
    let container = container(statefulset);
    let ports = container_ports(container);
    let pgwire = port_of(&env_value(container, "RIVULET_LISTEN"));
    let http = port_of(&env_value(container, "RIVULET_HTTP_LISTEN"));
    for name in ["RIVULET_LISTEN", "RIVULET_HTTP_LISTEN"] {
        let address = env_value(container, name);
        assert!(
            !address.starts_with("127.") && !address.starts_with("localhost:"),
            "{name}={address}: a Service cannot reach a loopback address"
        );
    }
    let container_set: BTreeSet<u16> = ports.values().copied().collect();
    assert_eq!(container_set, BTreeSet::from([pgwire, http]));
    let dockerfile = instructions(&read(&root().join("Dockerfile")));
    let exposed: BTreeSet<u16> = exposed_ports(runtime_stage(&dockerfile))
        .into_iter()
        .collect();
    assert_eq!(container_set, exposed, "the Dockerfile's EXPOSE");

    // Each Service selects the pod and serves a container port on the same number.
    let template = &statefulset["spec"]["template"];
    let pod_labels = strings(&template["metadata"]["labels"]);
    assert!(selects(
        &strings(&statefulset["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let mut served = BTreeSet::new();
    let services = of_kind(&resources, "Service");
    for service in &services {
        let name = text(&service["metadata"]["name"]);
        assert!(
            selects(&strings(&service["spec"]["selector"]), &pod_labels),
            "Service {name} does not select the pod"
        );
        for port in service["spec"]["ports"].as_sequence().unwrap() {
            let target = resolve(&port["targetPort"], &ports);
            assert_eq!(number(&port["port"]), u64::from(target), "Service {name}");
            served.insert(target);
        }
    }
    assert_eq!(served, container_set, "ports no Service serves");
    let governing = text(&statefulset["spec"]["serviceName"]);
    assert!(
        services
            .iter()
            .any(|s| s["metadata"]["name"] == governing.as_str()),
        "serviceName {governing} is not a Service"
    );

    // The probes ask the HTTP endpoint the two paths it serves without authentication.
    for (probe, path) in [
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve(&get["port"], &ports), http, "{probe}");
    }
    let annotations = strings(&template["metadata"]["annotations"]);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], http.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn environment_names_only_flags_of_the_binary() {
    let resources = resources();
    let statefulset = statefulset(&resources);
    let container = container(statefulset);
    let env = env(container);
    for name in REQUIRED_ENV {
        assert!(env.contains_key(name), "the container does not set {name}");
    }
    let bin = rivulet_bin();
    let help = Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build -p rivulet first)", bin.display()));
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for name in env.keys() {
        // clap prints `[env: NAME=]`, or `[env: NAME]` for a hidden value.
        assert!(
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "the container sets {name}, which `rivulet --help` does not list"
        );
    }
    // Kubernetes would put RIVULET_SERVICE_HOST, RIVULET_PORT, ... of the Services named rivulet*
    // into the environment the server reads its flags from.
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["enableServiceLinks"],
        false
    );

    // The image's binary without the image's CMD flags, which would win over the environment.
    let dockerfile = instructions(&read(&root().join("Dockerfile")));
    let cmd: Vec<String> =
        serde_yaml::from_str(last(runtime_stage(&dockerfile), "CMD").expect("a CMD"))
            .expect("CMD in exec form");
    assert_eq!(container["command"], Value::from(vec![cmd[0].clone()]));
    assert!(container["args"].is_null(), "{:?}", container["args"]);

    // The password comes from the Secret, and is not empty: the server takes an empty one as a
    // password, and would then listen on 0.0.0.0 behind it.
    let reference = &env["RIVULET_PASSWORD"]["valueFrom"]["secretKeyRef"];
    let (name, key) = (text(&reference["name"]), text(&reference["key"]));
    let secret = of_kind(&resources, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no Secret {name}"));
    let password = text(&secret["stringData"][key.as_str()]);
    assert!(!password.is_empty(), "Secret {name} has an empty {key}");
}

#[test]
fn data_dir_user_and_shutdown_agree_with_the_dockerfile() {
    let resources = resources();
    let statefulset = statefulset(&resources);
    let spec = &statefulset["spec"]["template"]["spec"];
    let container = container(statefulset);
    // One server owns its data dir.
    assert_eq!(number(&statefulset["spec"]["replicas"]), 1);

    let dockerfile = instructions(&read(&root().join("Dockerfile")));
    let stage = runtime_stage(&dockerfile);
    let volume = last(stage, "VOLUME").expect("a VOLUME");
    let volumes: Vec<String> = if volume.starts_with('[') {
        serde_yaml::from_str(volume).unwrap()
    } else {
        volume.split_whitespace().map(str::to_string).collect()
    };
    let [data_dir] = &volumes[..] else {
        panic!("VOLUME {volumes:?} is not one directory")
    };
    assert_eq!(&env_value(container, "RIVULET_DATA_DIR"), data_dir);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == data_dir.as_str())
        .unwrap_or_else(|| panic!("nothing is mounted at {data_dir}"));
    let claims = statefulset["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates");
    assert!(
        claims
            .iter()
            .any(|c| c["metadata"]["name"] == mount["name"]),
        "{data_dir} is not on a PersistentVolumeClaim"
    );

    // The image's user: the pod runs as its uid and gid, and the volume belongs to its group.
    let commands: Vec<&str> = stage
        .iter()
        .filter(|(k, _)| k == "RUN")
        .flat_map(|(_, rest)| rest.split("&&"))
        .map(str::trim)
        .collect();
    let command = |program: &str| {
        *commands
            .iter()
            .find(|c| c.starts_with(&format!("{program} ")))
            .unwrap_or_else(|| panic!("no {program} in the runtime stage"))
    };
    let (groupadd, useradd) = (command("groupadd"), command("useradd"));
    let gid: u64 = after(groupadd, "--gid").unwrap().parse().unwrap();
    let uid: u64 = after(useradd, "--uid").unwrap().parse().unwrap();
    let group = groupadd.split_whitespace().last().unwrap();
    let user = useradd.split_whitespace().last().unwrap();
    assert_eq!(after(useradd, "--gid"), Some(group), "{useradd}");
    assert_eq!(last(stage, "USER"), Some(user));
    let security = &spec["securityContext"];
    assert_eq!(number(&security["runAsUser"]), uid);
    assert_eq!(number(&security["runAsGroup"]), gid);
    assert_eq!(number(&security["fsGroup"]), gid);
    assert_eq!(security["runAsNonRoot"], true);

    // The kubelet's SIGKILL comes after the server's own bounded shutdown.
    let grace_ms = number(&spec["terminationGracePeriodSeconds"]) * 1000;
    let shutdown_ms: u64 = env_value(container, "RIVULET_SHUTDOWN_TIMEOUT_MS")
        .parse()
        .unwrap();
    assert!(
        grace_ms > shutdown_ms,
        "terminationGracePeriodSeconds ({grace_ms} ms) does not exceed RIVULET_SHUTDOWN_TIMEOUT_MS \
         ({shutdown_ms})"
    );
}
