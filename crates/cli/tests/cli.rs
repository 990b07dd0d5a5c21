//! The command line itself. Living in this package also makes
//! `cargo test --workspace` build the `fleetprompt` binary that the system
//! tests in `tests/` start.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleetprompt");

#[test]
fn help_lists_every_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "tenant", "workflows", "replay", "bench"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["serve", "--bind", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bind \"nowhere\" is not an address"));
}
