//! Which signal types a rule set listens for, checked against the types
//! that can be recorded: an `on` or `cancel_on` naming a type nothing emits
//! never fires, which is what a typo (`webchat.conversation.closed` for
//! `webchat.session.ended`) looks like. These are warnings, not errors: a
//! signal posted through the admin API may carry any type.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::diagnostic::Diagnostic;
use crate::pattern::TypePattern;
use crate::rule::{Action, RuleSet};

/// Where a rule names a signal type it listens for.
#[derive(Debug, Clone)]
pub(crate) struct SignalRef {
    pub(crate) file: PathBuf,
    pub(crate) line: u32,
    pub(crate) col: u32,
    /// `on` or `cancel_on`.
    pub(crate) key: &'static str,
    pub(crate) pattern: TypePattern,
}

impl RuleSet {
    /// Warnings for every `on` and `cancel_on` whose pattern matches none of
    /// `known` (the types the platform's code and handlers record) nor any
    /// type this set's schedule rules emit, each with the nearest known type
    /// as a suggestion when one is close.
    pub fn unknown_signal_types(&self, known: &BTreeSet<String>) -> Vec<Diagnostic> {
        let mut types: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        for rule in &self.rules {
            if let Action::Emit(e) = &rule.action {
                types.insert(&e.signal_type);
            }
        }
        self.signal_refs
            .iter()
            .filter(|r| !types.iter().any(|t| r.pattern.matches(t)))
            .map(|r| {
                let pattern = r.pattern.as_str();
                let mut message = format!(
                    "warning: `{}` names `{pattern}`, which no known signal type matches",
                    r.key
                );
                let near = r
                    .pattern
                    .prefix()
                    .is_none()
                    .then(|| nearest(pattern, &types))
                    .flatten();
                if let Some(near) = near {
                    message.push_str(&format!("; did you mean {near}?"));
                } else if let Some((namespace, _)) = pattern.split_once('.') {
                    // No likely slip: list the namespace's types instead.
                    let prefix = format!("{namespace}.");
                    let same: Vec<&str> = types
                        .iter()
                        .copied()
                        .filter(|t| t.starts_with(&prefix))
                        .collect();
                    if !same.is_empty() {
                        message
                            .push_str(&format!("; known {namespace}.* types: {}", same.join(", ")));
                    }
                }
                message.push_str(" (a rule on it only fires for signals posted through the API)");
                Diagnostic {
                    file: r.file.clone(),
                    line: r.line,
                    col: r.col,
                    message,
                }
            })
            .collect()
    }
}

/// The known type closest to `name` by edit distance, if it is close
/// enough to be a likely slip (at most a third of the longer name differs):
/// a far-fetched suggestion misleads more than none.
fn nearest<'a>(name: &str, types: &BTreeSet<&'a str>) -> Option<&'a str> {
    types
        .iter()
        .map(|t| (edit_distance(name, t), *t))
        .min()
        .filter(|(d, t)| *d * 3 <= name.chars().count().max(t.chars().count()))
        .map(|(_, t)| t)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let replace = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = replace.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{CheckOptions, Scope};
    use crate::testing::source;

    fn known() -> BTreeSet<String> {
        [
            "webchat.message.received",
            "webchat.session.started",
            "webchat.session.ended",
            "webchat.contact.captured",
            "webchat.reply.sent",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    }

    fn warnings(text: &str) -> Vec<Diagnostic> {
        let set = RuleSet::from_sources(
            vec![source("w/a.toml", Scope::Defaults, text)],
            &CheckOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        set.unknown_signal_types(&known())
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn unknown_cancel_on_is_a_warning_with_a_suggestion() {
        let w = warnings(
            "[[rule]]\nid = \"r\"\non = \"webchat.message.received\"\n[[rule.directive]]\nkind = \"noop\"\ndelay = \"10m\"\ncancel_on = [\"webchat.reply.sent\", \"webchat.session.endd\"]\n",
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!((w[0].line, w[0].col), (7, 36), "{}", w[0]);
        assert!(
            w[0].message
                .starts_with("warning: `cancel_on` names `webchat.session.endd`"),
            "{}",
            w[0]
        );
        assert!(
            w[0].message.contains("did you mean webchat.session.ended?"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn unknown_on_far_from_everything_has_no_suggestion() {
        let w = warnings(
            "[[rule]]\nid = \"r\"\non = \"billing.invoice.paid\"\n[[rule.directive]]\nkind = \"noop\"\n",
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!((w[0].line, w[0].col), (3, 6));
        assert!(!w[0].message.contains("did you mean"), "{}", w[0]);
        assert!(
            !w[0].message.contains("types:"),
            "no billing.* type: {}",
            w[0]
        );
    }

    #[test]
    fn a_far_miss_lists_its_namespace_instead_of_guessing() {
        let w = warnings(
            "[[rule]]\nid = \"r\"\non = \"webchat.conversation.closed\"\n[[rule.directive]]\nkind = \"noop\"\n",
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(!w[0].message.contains("did you mean"), "{}", w[0]);
        assert!(
            w[0].message.contains("known webchat.* types: webchat.contact.captured, webchat.message.received, webchat.reply.sent, webchat.session.ended, webchat.session.started"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn known_types_patterns_and_emitted_types_are_quiet() {
        let w = warnings(
            "[[rule]]\nid = \"a\"\non = \"webchat.*\"\n[[rule.directive]]\nkind = \"noop\"\n\
             [[rule]]\nid = \"b\"\non = \"digest.due\"\n[[rule.directive]]\nkind = \"noop\"\n\
             [[rule]]\nid = \"c\"\nschedule = \"0 0 9 * * *\"\n[rule.emit]\ntype = \"digest.due\"\nsubject = \"d\"\n",
        );
        assert!(w.is_empty(), "{w:#?}");
        let w = warnings(
            "[[rule]]\nid = \"a\"\non = \"billing.*\"\n[[rule.directive]]\nkind = \"noop\"\n",
        );
        assert_eq!(w.len(), 1, "a prefix nothing starts with: {w:#?}");
    }
}
