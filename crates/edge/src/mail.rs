//! Composing one `email.send` task's email.
//!
//! Each email's `Message-ID` is derived from the directive id alone, so a
//! retried or repeated attempt (delivery is at-least-once: a crash during
//! `DATA` sends it again, see [`crate::journal`]) carries the same id, and
//! mail systems that deduplicate by `Message-ID` show it once.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use serde_json::Value;

use crate::api::Task;
use crate::config::Config;

/// Longest subject line kept, in characters.
const SUBJECT_MAX: usize = 200;

/// The deterministic `Message-ID` of a task.
pub fn message_id(task_id: &str, domain: &str) -> String {
    format!("<{task_id}@{domain}>")
}

/// A task's email, or why it cannot be one (a permanent failure).
pub fn compose(task: &Task, config: &Config) -> Result<Message, String> {
    let str_arg = |k: &str| task.args.get(k).and_then(Value::as_str);
    let to = match str_arg("to") {
        Some(t) => t
            .parse::<Mailbox>()
            .map_err(|e| format!("recipient {t:?} is not an address: {e}"))?,
        None => config
            .to
            .clone()
            .ok_or("the task names no recipient and this connector has no --to")?,
    };
    let subject: String = str_arg("subject")
        .unwrap_or("FleetPrompt")
        .chars()
        .filter(|c| !c.is_control())
        .take(SUBJECT_MAX)
        .collect();
    let body = match (str_arg("text"), str_arg("link")) {
        (Some(text), _) => text.to_owned(),
        (None, Some(link)) => format!("Open the conversation: {link}\n"),
        (None, None) => return Err("the task has neither `text` nor `link`".into()),
    };
    Message::builder()
        .message_id(Some(message_id(&task.id, &config.message_id_domain)))
        .from(config.from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the email: {e}"))
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
