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
        "--smtp-ca-file",
        "--smtp-cert-sha256",
        "--state-dir",
        "--from",
        "check",
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

#[test]
fn check_says_what_is_wrong_and_exits_1() {
    let state = std::env::temp_dir().join(format!("fp-edge-cli-{}", std::process::id()));
    // Nothing listens on port 1: both the SMTP server and the FleetPrompt
    // server are unreachable, and each failure gets its own line.
    let out = Command::new(BIN)
        .args([
            "check",
            "--server-url",
            "http://127.0.0.1:1",
            "--from",
            "support@acme.example",
            "--smtp-port",
            "1",
            "--smtp-cert-sha256",
            &"ab".repeat(32),
            "--state-dir",
        ])
        .arg(&state)
        .env("FLEETPROMPT_EDGE_TOKEN", "fpe_edge_x.y")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&"ab".repeat(32)), "{text}");
    assert!(
        text.contains("FAIL: cannot connect to the SMTP server 127.0.0.1:1"),
        "{text}"
    );
    assert!(
        text.contains("FAIL: the FleetPrompt server http://127.0.0.1:1"),
        "{text}"
    );
    assert!(text.contains("Some checks failed"), "{text}");

    // A bad setting is a failed check too, not a usage error.
    let out = Command::new(BIN)
        .args([
            "check",
            "--server-url",
            "http://127.0.0.1:1",
            "--from",
            "support@acme.example",
            "--smtp-cert-sha256",
            "not-hex",
        ])
        .env("FLEETPROMPT_EDGE_TOKEN", "fpe_edge_x.y")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL: --smtp-cert-sha256"), "{text}");
    let _ = std::fs::remove_dir_all(&state);
}
