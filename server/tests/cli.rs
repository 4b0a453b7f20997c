//! Command-line behaviour of the `rivulet` binary. (Its presence also makes `cargo test --workspace`
//! build the binary that the SQL tests in `sql-tests/` start.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn refuses_a_public_address_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without credentials"), "{stderr}");
}

#[test]
fn help_names_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data-dir", "--log", "--password"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
