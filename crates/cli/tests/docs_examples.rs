//! The rule examples in the documentation are checked by the real
//! `fleetprompt workflows check`, so they cannot drift from what the
//! platform accepts: every fenced `toml` block of `docs/*.md` and
//! `README.md` that holds a `[[rule]]` must load with no error and no
//! warning. A block marked `not-a-rule` on its fence line (```` ```toml
//! not-a-rule ````) is skipped, and so is one without a `[[rule]]` (a
//! configuration file, an FAQ).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleetprompt");

/// One fenced `toml` block: where it starts and what it holds.
struct Block {
    file: PathBuf,
    line: usize,
    text: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rule blocks of one Markdown file.
fn rule_blocks(file: &Path) -> Vec<Block> {
    let doc = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = fence.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    if words.next() == Some("toml") {
                        let skip = words.any(|w| w == "not-a-rule");
                        open = Some((i + 1, skip, String::new()));
                    } else {
                        // Another language's block: skip to its end.
                        open = Some((i + 1, true, String::new()));
                    }
                }
            }
            Some((start, skip, text)) => {
                if fence.starts_with("```") {
                    let is_rule = text.lines().any(|l| l.trim() == "[[rule]]");
                    if !*skip && is_rule {
                        blocks.push(Block {
                            file: file.to_path_buf(),
                            line: *start,
                            text: std::mem::take(text),
                        });
                    }
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    blocks
}

/// Runs `fleetprompt workflows check` on a directory holding `text` as its
/// one rule file; returns (success, stdout, stderr).
fn check(name: &str, text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    let out = Command::new(BIN)
        .args(["workflows", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_documented_rule_passes_workflows_check() {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    let blocks: Vec<Block> = files.iter().flat_map(|f| rule_blocks(f)).collect();
    // A parser that found nothing would pass vacuously.
    assert!(blocks.len() >= 6, "found only {} rule blocks", blocks.len());
    let mut failures = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let (ok, _, stderr) = check(&format!("example-{i}"), &b.text);
        if !ok || !stderr.is_empty() {
            failures.push(format!(
                "{}:{}: the example does not pass `workflows check`:\n{stderr}\n{}",
                b.file.display(),
                b.line,
                b.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_kind_is_an_error_at_its_position() {
    let (ok, _, stderr) = check(
        "bad",
        "[[rule]]\nid = \"r\"\non = \"webchat.message.received\"\n\n[[rule.directive]]\nkind = \"webchat.close_stale_conversations\"\n",
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("bad.toml:6:8: unknown directive kind `webchat.close_stale_conversations`"),
        "{stderr}"
    );
    // The known kinds are the engine's handlers.
    assert!(stderr.contains("webchat.conversation.close"), "{stderr}");
}

#[test]
fn a_signal_type_nothing_records_is_a_warning_with_a_suggestion() {
    let (ok, stdout, stderr) = check(
        "warn",
        "[[rule]]\nid = \"r\"\non = \"webchat.message.received\"\n\n[[rule.directive]]\nkind = \"noop\"\ndelay = \"10m\"\ncancel_on = [\"webchat.reply.sent\", \"webchat.session.endd\"]\n\n[[rule]]\nid = \"s\"\non = \"webchat.conversation.closed\"\n\n[[rule.directive]]\nkind = \"noop\"\n",
    );
    assert!(ok, "warnings do not fail the check: {stderr}");
    assert!(stdout.contains("with 2 warning(s)"), "{stdout}");
    assert!(
        stderr.contains("warn.toml:8:36: warning: `cancel_on` names `webchat.session.endd`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean webchat.session.ended?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warn.toml:12:6: warning: `on` names `webchat.conversation.closed`"),
        "{stderr}"
    );
    // Too far from any type to guess: the namespace's types are listed.
    assert!(
        stderr.contains("webchat.session.ended, webchat.session.reopened, webchat.session.started"),
        "{stderr}"
    );
    // The shipped rules name only types the platform records.
    let shipped = Command::new(BIN)
        .args(["workflows", "check"])
        .arg(repo_root().join("workflows"))
        .output()
        .unwrap();
    assert!(shipped.status.success());
    assert_eq!(String::from_utf8_lossy(&shipped.stderr), "");
}
