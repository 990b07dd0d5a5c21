//! Helpers shared by the unit tests of several modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::{CheckOptions, Destinations, LoadError, RuleSet, RuleSource, Scope};

pub(crate) fn source(path: &str, scope: Scope, text: &str) -> RuleSource {
    RuleSource {
        path: PathBuf::from(path),
        scope,
        bytes: text.as_bytes().to_vec(),
    }
}

pub(crate) fn tenant(slug: &str) -> Scope {
    Scope::Tenant(slug.to_owned())
}

/// Kinds `notify`, `email`, `mattermost`; shared destination `support`,
/// tenant `acme` also has `ops`.
pub(crate) fn options() -> CheckOptions {
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    CheckOptions {
        known_kinds: Some(set(&["notify", "email", "mattermost"])),
        destinations: Some(Destinations {
            shared: set(&["support"]),
            per_tenant: BTreeMap::from([("acme".to_owned(), set(&["ops"]))]),
        }),
        args_check: None,
    }
}

pub(crate) fn load(sources: Vec<RuleSource>) -> Result<RuleSet, LoadError> {
    RuleSet::from_sources(sources, &options())
}

/// Loads one defaults file that must be valid.
pub(crate) fn rules(text: &str) -> RuleSet {
    match load(vec![source("w/a.toml", Scope::Defaults, text)]) {
        Ok(set) => set,
        Err(e) => panic!("rules should load: {e}"),
    }
}
