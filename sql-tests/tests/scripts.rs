//! The set-up scripts: `scripts/run` installs only what the server's build links, not the test
//! tools (a Kafka broker, client libraries, a JDK), so a fresh machine gets a server in the build
//! time alone.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn run_installs_only_what_the_server_build_needs() {
    let run = std::fs::read_to_string(root().join("scripts/run")).unwrap();
    let scripts: Vec<&str> = run
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("scripts/"))
        .collect();
    assert_eq!(scripts, vec!["scripts/deps server"], "{run}");
    // Traced, `scripts/deps server` runs neither the broker's install nor the client libraries'
    // (the machine that runs the tests has the server's packages, so nothing is installed).
    let out = Command::new("bash")
        .arg("-x")
        .arg(root().join("scripts/deps"))
        .arg("server")
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{trace}");
    for test_only in ["tansu", "deps-compat", "postgresql-client", "apt-get"] {
        assert!(!trace.contains(test_only), "ran {test_only}: {trace}");
    }
    assert!(trace.contains("librocksdb-dev"), "{trace}");
}
