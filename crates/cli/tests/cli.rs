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

/// `fleetprompt` in `dir` with none of the caller's settings in its
/// environment, so only what a test gives counts.
fn clean(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("FLEETPROMPT_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c
}

/// The `config show` line of `key`.
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("config show lacks {key}:\n{text}"))
}

#[test]
fn config_show_layers_file_then_env_then_flags_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // Found as ./fleetprompt.toml; keys with `-` or `_`.
    std::fs::write(
        dir.path().join("fleetprompt.toml"),
        "bind = \"127.0.0.1:9001\"\n\
         concurrency = 7\n\
         lease-secs = 31\n\
         allow_outbound = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n\
         database_url = \"postgres://fleet:hunter2@db.internal/fleet\"\n\
         master_key = \"9f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0\"\n",
    )
    .unwrap();
    let out = clean(dir.path())
        .env("FLEETPROMPT_CONCURRENCY", "9")
        .env("FLEETPROMPT_LEASE_SECS", "50")
        .args(["config", "show", "--lease-secs", "40"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The file over the default.
    let bind = setting(&text, "bind");
    assert!(
        bind.contains("\"127.0.0.1:9001\"") && bind.contains("# file fleetprompt.toml:1"),
        "{bind}"
    );
    // The environment over the file.
    let concurrency = setting(&text, "concurrency");
    assert!(
        concurrency.contains("= 9 ") && concurrency.contains("# env FLEETPROMPT_CONCURRENCY"),
        "{concurrency}"
    );
    // A flag over both.
    let lease = setting(&text, "lease_secs");
    assert!(
        lease.contains("= 40 ") && lease.ends_with("# flag"),
        "{lease}"
    );
    // Untouched: the default.
    assert!(setting(&text, "poll_ms").ends_with("# default"), "{text}");
    assert!(
        setting(&text, "allow_outbound").contains("[\"10.0.0.0/8\", \"192.168.0.0/16\"]"),
        "{text}"
    );
    // Secrets never printed.
    assert!(
        !text.contains("hunter2") && !text.contains("9f1c2d3e"),
        "{text}"
    );
    assert!(
        setting(&text, "database_url").contains("postgres://fleet:***@db.internal/fleet"),
        "{text}"
    );
    assert!(setting(&text, "master_key").contains("\"***\""), "{text}");

    // Without the file (another directory), the defaults again.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = clean(elsewhere.path())
        .args(["config", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# configuration file: none"), "{text}");
    assert!(
        setting(&text, "bind").contains("\"127.0.0.1:8080\""),
        "{text}"
    );
}

#[test]
fn an_unknown_setting_is_refused_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(&path, "bind = \"127.0.0.1:0\"\n\n   colour = \"blue\"\n").unwrap();
    for how in ["flag", "env"] {
        let mut c = clean(dir.path());
        match how {
            "flag" => c.arg("--config").arg(&path),
            _ => c.env("FLEETPROMPT_CONFIG", &path),
        };
        let out = c.arg("migrate").output().unwrap();
        assert!(!out.status.success(), "{how}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}:3:4: unknown setting \"colour\"",
                path.display()
            )),
            "{how}: {err}"
        );
    }
    // A file named explicitly must exist.
    let out = clean(dir.path())
        .args(["--config", "missing.toml", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
