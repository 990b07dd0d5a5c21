//! Composing one `email.send` task's email.
//!
//! Each email's `Message-ID` is derived from the directive id alone, so a
//! retried or repeated attempt (delivery is at-least-once: a crash during
//! `DATA` sends it again, see [`crate::journal`]) carries the same id, and
//! mail systems that deduplicate by `Message-ID` show it once.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message, MultiPart};
use serde_json::Value;

use crate::api::Task;
use crate::config::Config;

/// Longest subject line kept, in characters.
const SUBJECT_MAX: usize = 200;

/// The deterministic `Message-ID` of a task.
pub fn message_id(task_id: &str, domain: &str) -> String {
    format!("<{task_id}@{domain}>")
}

/// A conversation's thread id, `<conv_…@domain>`: every email of one
/// conversation names it in `References`, so mail clients thread them and
/// a reply names the conversation even when its `In-Reply-To` is lost.
pub fn thread_id(conversation: &str, domain: &str) -> String {
    format!("<{conversation}@{domain}>")
}

fn mailbox(what: &str, s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("{what} {s:?} is not an address: {e}"))
}

/// A task's email, or why it cannot be one (a permanent failure).
///
/// Args: `to` (an address or a list; else the connector's `--to`), `from`
/// (else `--from`), `subject`, `text` and optionally `html` (then the email
/// is multipart/alternative), `link` (a body of its own when there is no
/// `text`), `thread_id` (a conversation id: `In-Reply-To` and `References`
/// name its thread). `Reply-To` is the sender, the mailbox the connector's
/// IMAP watch reads.
pub fn compose(task: &Task, config: &Config) -> Result<Message, String> {
    let str_arg = |k: &str| task.args.get(k).and_then(Value::as_str);
    let to: Vec<Mailbox> = match task.args.get("to") {
        Some(Value::String(t)) => vec![mailbox("recipient", t)?],
        Some(Value::Array(many)) if !many.is_empty() => many
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| "`to` must hold addresses".to_owned())
                    .and_then(|t| mailbox("recipient", t))
            })
            .collect::<Result<_, _>>()?,
        _ => vec![
            config
                .to
                .clone()
                .ok_or("the task names no recipient and this connector has no --to")?,
        ],
    };
    let from = match str_arg("from") {
        Some(f) => mailbox("sender", f)?,
        None => config.from.clone(),
    };
    let subject: String = str_arg("subject")
        .unwrap_or("FleetPrompt")
        .chars()
        .filter(|c| !c.is_control())
        .take(SUBJECT_MAX)
        .collect();
    let text = match (str_arg("text"), str_arg("link")) {
        (Some(text), _) => text.to_owned(),
        (None, Some(link)) => format!("Open the conversation: {link}\n"),
        (None, None) => return Err("the task has neither `text` nor `link`".into()),
    };
    let mut b = Message::builder()
        .message_id(Some(message_id(&task.id, &config.message_id_domain)))
        .from(from.clone())
        .reply_to(from)
        .subject(subject);
    for t in to {
        b = b.to(t);
    }
    if let Some(conv) = str_arg("thread_id")
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
    {
        let thread = thread_id(conv, &config.message_id_domain);
        b = b.in_reply_to(thread.clone()).references(thread);
    }
    let built = match str_arg("html") {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(text, html.to_owned())),
        None => b.header(ContentType::TEXT_PLAIN).body(text),
    };
    built.map_err(|e| format!("cannot build the email: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(to: Option<&str>) -> Config {
        let mut v = vec![
            "fleetprompt-edge",
            "--server-url",
            "https://fp.example.com",
            "--from",
            "Acme <support@acme.example>",
        ];
        if let Some(t) = to {
            v.extend(["--to", t]);
        }
        crate::config::Args::try_parse_from(v)
            .unwrap()
            .validate(Some("fpe_a.b".into()), None)
            .unwrap()
    }

    fn task(args: Value) -> Task {
        Task {
            id: "dir_0193a1b2c3d4e5f60718293a4b5c6d7e".into(),
            kind: "email.send".into(),
            attempt: 1,
            args,
        }
    }

    #[test]
    fn message_id_depends_only_on_the_task() {
        let t =
            task(serde_json::json!({ "to": "team@acme.example", "subject": "Hi", "text": "x" }));
        let a = String::from_utf8(compose(&t, &config(None)).unwrap().formatted()).unwrap();
        let b = String::from_utf8(compose(&t, &config(None)).unwrap().formatted()).unwrap();
        let line = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("Message-ID:"))
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            line(&a),
            "Message-ID: <dir_0193a1b2c3d4e5f60718293a4b5c6d7e@edge.fleetprompt>"
        );
        assert_eq!(line(&a), line(&b));
    }

    #[test]
    fn an_escalation_email_threads_and_has_an_html_alternative() {
        let t = task(serde_json::json!({
            "to": ["team@acme.example", "Ana <ana@acme.example>"],
            "from": "Acme Desk <desk@acme.example>",
            "subject": "[FleetPrompt] Conversation with Ana (#3f9c)",
            "text": "plain words",
            "html": "<p>html words</p>",
            "thread_id": "conv_0193a1b2c3d4e5f60718293a4b5c3f9c",
        }));
        let m = String::from_utf8(compose(&t, &config(None)).unwrap().formatted()).unwrap();
        assert!(
            m.contains("To: team@acme.example, Ana <ana@acme.example>"),
            "{m}"
        );
        assert!(m.contains("From: \"Acme Desk\" <desk@acme.example>"), "{m}");
        assert!(
            m.contains("Reply-To: \"Acme Desk\" <desk@acme.example>"),
            "{m}"
        );
        let thread = "<conv_0193a1b2c3d4e5f60718293a4b5c3f9c@edge.fleetprompt>";
        assert!(m.contains(&format!("In-Reply-To: {thread}")), "{m}");
        assert!(m.contains(&format!("References: {thread}")), "{m}");
        assert!(m.contains("multipart/alternative"), "{m}");
        assert!(
            m.contains("plain words") && m.contains("<p>html words</p>"),
            "{m}"
        );
    }

    #[test]
    fn recipient_falls_back_to_the_default_or_fails() {
        let t = task(serde_json::json!({ "subject": "Hi", "link": "https://fp/c/1" }));
        let m = compose(&t, &config(Some("team@acme.example"))).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(text.contains("To: team@acme.example"), "{text}");
        assert!(text.contains("https://fp/c/1"), "{text}");
        assert!(compose(&t, &config(None)).unwrap_err().contains("--to"));
        let bad = task(serde_json::json!({ "to": "not an address", "text": "x" }));
        assert!(compose(&bad, &config(None)).is_err());
    }
}
