//! The command line itself. Living in this package also makes
//! `cargo test --workspace` build the `fleetprompt-edge` binary that the
//! system tests in `tests/` start.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleetprompt-edge");

#[test]
fn help_names_the_settings() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--server-url",
        "--token-file",
        "--smtp-host",
        "--smtp-security",
        "--from",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn refuses_plain_smtp_to_a_remote_host_before_starting() {
    let out = Command::new(BIN)
        .args([
            "--server-url",
            "https://fp.example.com",
            "--from",
            "support@acme.example",
            "--smtp-host",
            "mail.example.com",
            "--smtp-security",
            "plain-text-insecure-loopback-only",
        ])
        .env("FLEETPROMPT_EDGE_TOKEN", "fpe_edge_x.y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn a_missing_token_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "--server-url",
            "https://fp.example.com",
            "--from",
            "a@b.example",
        ])
        .env_remove("FLEETPROMPT_EDGE_TOKEN")
        .env_remove("FLEETPROMPT_EDGE_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLEETPROMPT_EDGE_TOKEN"));
}
