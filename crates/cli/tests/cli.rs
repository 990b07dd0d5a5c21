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

#[test]
fn package_install_is_idempotent_and_names_unknown_packages() {
    let dir = std::env::temp_dir().join(format!("fp-cli-{}", std::process::id()));
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    assert!(
        run(&["tenant", "create", "shop", "--json"])
            .status
            .success()
    );
    let first = run(&["package", "install", "website_chat", "--tenant", "shop"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("\"package\":\"website_chat\""));
    assert!(String::from_utf8_lossy(&first.stderr).contains("installed website_chat for shop"));
    let again = run(&["package", "install", "website_chat", "--tenant", "shop"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already installed"));
    let bad = run(&["package", "install", "nope", "--tenant", "shop"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown package \"nope\""));
    let _ = std::fs::remove_dir_all(&dir);
}
