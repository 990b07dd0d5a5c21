//! A conversation's audit timeline as HTML: every signal, rule verdict,
//! directive, attempt and result in time order, and the same as a causal
//! chain (message → rule → directive → attempts → result signal).

use std::collections::{HashMap, HashSet};

use fleetprompt_core::{DirectiveId, DirectiveStatus, Origin, SignalId};
use fleetprompt_store::directive::{AttemptRow, DirectiveRow};
use fleetprompt_store::evaluation::EvaluationRow;
use fleetprompt_store::signal::SignalRow;
use fleetprompt_store::timeline::Entry;
use maud::{Markup, html};
use serde_json::Value;

use super::{badge, mask_email, when};

/// What the timeline may show and offer.
pub struct View<'a> {
    /// The conversation (for the retry form's action).
    pub conversation: &'a str,
    /// Whether the visitor's contact details may be shown.
    pub show_details: bool,
    /// Whether the member may retry failed directives (admins).
    pub can_retry: bool,
    /// The CSRF field for the retry forms.
    pub csrf: Markup,
}

/// Who created a directive, in words.
pub fn origin_label(o: &Origin) -> String {
    match o {
        Origin::Member { name, .. } => format!("operator {name}"),
        Origin::Rule { rule_id, .. } => format!("rule {rule_id}"),
        Origin::Api { .. } => "the tenant's API token".into(),
        Origin::Operator { user } => format!("operator {user}"),
        Origin::System { component } => format!("the platform ({component})"),
    }
}

/// An error as an operator reads it.
pub fn plain_error(e: &str) -> String {
    let l = e.to_lowercase();
    let why = if l.contains("timed out") || l.contains("timeout") {
        "The destination did not answer in time"
    } else if l.contains("connection refused") || l.contains("connect") && l.contains("error") {
        "The destination could not be reached"
    } else if l.contains("status 4") || l.contains("http 4") {
        "The destination refused the request"
    } else if l.contains("status 5") || l.contains("http 5") {
        "The destination had an error"
    } else if l.contains("not_configured") || l.contains("no destination") {
        "The destination is not set up"
    } else {
        "It failed"
    };
    format!("{why}: {e}")
}

fn signal_who(s: &SignalRow, directives: &HashMap<DirectiveId, &DirectiveRow>) -> String {
    let p = &s.payload;
    if let Some(name) = p.pointer("/author/name").and_then(Value::as_str) {
        return format!("operator {name}");
    }
    if let Some(d) = s.caused_by.and_then(|d| directives.get(&d)) {
        return format!("result of {} ({})", d.kind, origin_label(&d.origin));
    }
    match p.get("role").and_then(Value::as_str) {
        Some("visitor") => "the visitor".into(),
        None if s.signal_type == "webchat.session.started" => "the visitor".into(),
        Some(r) => r.to_owned(),
        None => p
            .get("actor")
            .and_then(Value::as_str)
            .map_or_else(|| "the platform".into(), str::to_owned),
    }
}

/// The payload fields worth a line, in words.
fn signal_detail(s: &SignalRow, show_details: bool) -> Markup {
    let p = &s.payload;
    let text = |k: &str| p.get(k).and_then(Value::as_str);
    html! {
        @if let Some(c) = text("content") {
            @if s.signal_type == "webchat.note.added" { "Private note: " } @else { "“" }
            (c)
            @if s.signal_type != "webchat.note.added" { "”" }
        }
        @if let Some(v) = text("post_id") { " Mattermost post id " code { (v) } "." }
        @if s.signal_type.starts_with("email.") {
            @if let Some(v) = text("message_id") { " Message-ID " code { (v) } "." }
        }
        @if let Some(v) = text("smtp_reply") { " SMTP reply: " code { (v) } "." }
        @if let Some(v) = text("destination") { " Destination " (v) "." }
        @if let Some(v) = text("reason") { " Reason: " (v) "." }
        @if let Some(v) = text("email") {
            " Email " (if show_details { v.to_owned() } else { mask_email(v) }) "."
        }
        @if let Some(v) = text("error") { " " (plain_error(v)) }
    }
}

fn directive_detail(d: &DirectiveRow, v: &View<'_>) -> Markup {
    html! {
        @if let Some(dest) = d.args.get("destination").and_then(Value::as_str) { " to " (dest) }
        " by " (origin_label(&d.origin))
        @if d.attempts > 0 { ", " (d.attempts) " of " (d.max_attempts) " attempts" }
        "."
        @if let Some(e) = &d.last_error { " " span class="s-failed" { (plain_error(e)) } }
        @if d.status == DirectiveStatus::Failed && v.can_retry {
            " "
            form method="post" class="inline" action={ "/console/conversations/" (v.conversation) "/directives/" (d.id) "/retry" } {
                (v.csrf)
                button type="submit" { "Retry" span class="visually-hidden" { " " (d.kind) } }
            }
        }
    }
}

fn attempt_line(a: &AttemptRow, kind: &str) -> Markup {
    html! {
        "Attempt " (a.number) " of " (kind) ": " (badge(a.outcome.as_str()))
        @if let Some(s) = a.http_status {
            @if kind.contains("email") { " SMTP " (s) } @else { " HTTP " (s) }
        }
        @if let Some(r) = &a.external_ref {
            @if kind.contains("mattermost") { " — Mattermost post id " code { (r) } }
            @else if kind.contains("email") { " — Message-ID " code { (r) } }
            @else { " — " code { (r) } }
        }
        @if let Some(e) = &a.error { " — " (plain_error(e)) }
    }
}

fn rule_line(r: &EvaluationRow) -> Markup {
    html! {
        "Rule " strong { (r.rule_id) } " " (badge(&r.outcome))
        @if !r.detail.is_empty() { " — " (r.detail) }
    }
}

/// The timeline in time order.
pub fn in_order(entries: &[Entry], v: &View<'_>) -> Markup {
    let directives: HashMap<DirectiveId, &DirectiveRow> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Directive(d) => Some((d.id, d)),
            _ => None,
        })
        .collect();
    html! {
        ol class="timeline" {
            @for e in entries {
                li {
                    @match e {
                        Entry::Signal(s) => {
                            (when(s.recorded_at)) " "
                            span class="kind" { (s.signal_type) } " — " (signal_who(s, &directives)) ". "
                            span class="detail" { (signal_detail(s, v.show_details)) }
                        }
                        Entry::Rule(r) => { (when(r.evaluated_at)) " " (rule_line(r)) }
                        Entry::Directive(d) => {
                            (when(d.created_at)) " "
                            span class="kind" { "Directive " (d.kind) } " " (badge(d.status.as_str()))
                            span class="detail" { (directive_detail(d, v)) }
                        }
                        Entry::Attempt(a) => {
                            (when(a.finished_at)) " "
                            (attempt_line(a, directives.get(&a.directive_id).map_or("", |d| d.kind.as_str())))
                        }
                    }
                }
            }
        }
    }
}

/// The causal chain: each signal with the rules that judged it, the
/// directives it caused, their attempts and the signals they recorded.
pub fn chain(entries: &[Entry], v: &View<'_>) -> Markup {
    let mut c = Chain {
        rules: HashMap::new(),
        caused_directives: HashMap::new(),
        attempts: HashMap::new(),
        results: HashMap::new(),
        view: v,
    };
    let mut signal_ids = HashSet::new();
    let mut directive_ids = HashSet::new();
    for e in entries {
        match e {
            Entry::Signal(s) => {
                signal_ids.insert(s.id);
                if let Some(d) = s.caused_by {
                    c.results.entry(d).or_default().push(s);
                }
            }
            Entry::Rule(r) => c.rules.entry(r.signal_id).or_default().push(r),
            Entry::Directive(d) => {
                directive_ids.insert(d.id);
                if let Some(s) = d.caused_by {
                    c.caused_directives.entry(s).or_default().push(d);
                }
            }
            Entry::Attempt(a) => c.attempts.entry(a.directive_id).or_default().push(a),
        }
    }
    html! {
        ul class="chain" {
            @for e in entries {
                @match e {
                    Entry::Signal(s) if s.caused_by.is_none_or(|d| !directive_ids.contains(&d)) => { (c.signal(s, 0)) }
                    _ => {}
                }
            }
            @for e in entries {
                @match e {
                    Entry::Directive(d) if d.caused_by.is_none_or(|s| !signal_ids.contains(&s)) => { (c.directive(d, 0)) }
                    _ => {}
                }
            }
        }
    }
}

/// The timeline's entries by what caused them, each looked up once.
struct Chain<'a> {
    rules: HashMap<SignalId, Vec<&'a EvaluationRow>>,
    caused_directives: HashMap<SignalId, Vec<&'a DirectiveRow>>,
    attempts: HashMap<DirectiveId, Vec<&'a AttemptRow>>,
    results: HashMap<DirectiveId, Vec<&'a SignalRow>>,
    view: &'a View<'a>,
}

/// What one entry caused (or judged it), none when nothing did.
fn under<'a, K: std::hash::Hash + Eq, V>(by: &'a HashMap<K, Vec<V>>, key: &K) -> &'a [V] {
    by.get(key).map(Vec::as_slice).unwrap_or_default()
}

/// Deepest chain shown (a loop of rules cannot recurse forever).
const DEPTH: usize = 12;

impl Chain<'_> {
    fn signal(&self, s: &SignalRow, depth: usize) -> Markup {
        let rules = under(&self.rules, &s.id);
        let caused = under(&self.caused_directives, &s.id);
        html! {
            li {
                span class="kind" { (s.signal_type) } " " (when(s.recorded_at)) " "
                span class="detail" { (signal_detail(s, self.view.show_details)) }
                @if depth < DEPTH && (!rules.is_empty() || !caused.is_empty()) {
                    ul {
                        @for r in rules { li { (rule_line(r)) } }
                        @for d in caused { (self.directive(d, depth + 1)) }
                    }
                }
            }
        }
    }

    fn directive(&self, d: &DirectiveRow, depth: usize) -> Markup {
        let attempts = under(&self.attempts, &d.id);
        let results = under(&self.results, &d.id);
        html! {
            li {
                span class="kind" { "Directive " (d.kind) } " " (badge(d.status.as_str()))
                span class="detail" { (directive_detail(d, self.view)) }
                @if depth < DEPTH {
                    ul {
                        @for a in attempts { li { (attempt_line(a, &d.kind)) } }
                        @for s in results { (self.signal(s, depth + 1)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_in_plain_words() {
        assert!(
            plain_error("request timed out after 10s")
                .starts_with("The destination did not answer in time")
        );
        assert!(plain_error("weird").starts_with("It failed: weird"));
    }
}
