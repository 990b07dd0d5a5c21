//! The active workflow rule set: loaded as a whole, swapped atomically, and
//! reloaded when the directory changes. A set that fails validation is
//! refused whole; the last good set stays active.
//!
//! A rule file is read only once it has settled: the watcher waits until
//! the directory has been unchanged for [`SETTLE`] before it loads, so a
//! copy that truncates a file and then writes it is not caught in between.
//! A file that had rules and now has none (an empty file caught anyway, a
//! slow copy) is refused like an invalid one, unless it says so with a
//! [`EMPTY_MARKER`] line; deleting a file is how its rules are removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_workflows::{CheckOptions, Diagnostic, LoadError, RuleSet, RuleSource};
use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::Engine;
use crate::metrics::WORKFLOW_RELOADS;

/// How the rule set got to be what it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesStatus {
    /// The directory rules are read from.
    pub dir: Option<PathBuf>,
    /// When the active set was loaded.
    #[serde(serialize_with = "ser_opt_ms")]
    pub loaded_at: Option<Millis>,
    /// Why the last reload was refused, if it was.
    pub last_error: Option<String>,
    /// When that was.
    #[serde(serialize_with = "ser_opt_ms")]
    pub last_error_at: Option<Millis>,
    /// Hash of the directory's rule files, to notice changes.
    #[serde(skip)]
    fingerprint: Option<String>,
}

fn ser_opt_ms<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&fleetprompt_core::time::to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// The engine's rules.
pub struct Rules {
    active: RwLock<Arc<RuleSet>>,
    status: Mutex<RulesStatus>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            active: RwLock::new(Arc::new(RuleSet::empty())),
            status: Mutex::new(RulesStatus::default()),
        }
    }
}

impl Rules {
    /// The active set.
    pub fn current(&self) -> Arc<RuleSet> {
        self.active.read().expect("rules lock").clone()
    }

    /// The reload status.
    pub fn status(&self) -> RulesStatus {
        self.status.lock().expect("rules status lock").clone()
    }
}

/// The options rule files are checked with: the platform's directive kinds.
pub fn check_options(engine: &Engine) -> CheckOptions {
    CheckOptions {
        known_kinds: Some(
            engine
                .handlers()
                .kinds()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
        destinations: None,
        // A rule whose arguments do not fit is an error on the timeline
        // when it acts (and in `workflows check`), not a refused rule set.
        args_check: None,
    }
}

/// How long the rule files must stay unchanged before the watcher loads them.
pub const SETTLE: Duration = Duration::from_millis(500);

/// How often the watcher looks again while a change settles.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// A line that lets a rule file that had rules have none.
pub const EMPTY_MARKER: &str = "# fleetprompt: empty";

/// Hash of these rule files.
fn fingerprint_of(sources: &[RuleSource]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.path.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(&s.bytes);
    }
    hex::encode(h.finalize())
}

/// Hash of every rule file under `dir`, or `None` when it cannot be read.
fn fingerprint(dir: &Path) -> Option<String> {
    fleetprompt_workflows::read_dir(dir)
        .ok()
        .map(|s| fingerprint_of(&s))
}

/// The files of `new` that have no rules though they had some in `active`
/// and do not say [`EMPTY_MARKER`]: most likely caught half-written.
fn emptied_files(active: &RuleSet, new: &RuleSet, sources: &[RuleSource]) -> Vec<Diagnostic> {
    let count = |set: &RuleSet| {
        let mut n = std::collections::HashMap::<PathBuf, usize>::new();
        for r in set.summaries() {
            *n.entry(r.file).or_default() += 1;
        }
        n
    };
    let (before, after) = (count(active), count(new));
    sources
        .iter()
        .filter(|s| before.get(&s.path).is_some_and(|n| *n > 0) && !after.contains_key(&s.path))
        .filter(|s| {
            !String::from_utf8_lossy(&s.bytes)
                .lines()
                .any(|l| l.trim() == EMPTY_MARKER)
        })
        .map(|s| Diagnostic {
            file: s.path.clone(),
            line: 1,
            col: 1,
            message: format!(
                "{} rule(s) would be removed: the file now has none (half-written?); \
                 add a line `{EMPTY_MARKER}` to mean it, or delete the file",
                before[&s.path]
            ),
        })
        .collect()
}

/// Loads `dir` and, if the whole set is valid, makes it active. A missing
/// directory is an empty set. Returns the number of rules, or the problems.
pub fn load(engine: &Engine, dir: &Path) -> Result<usize, LoadError> {
    let rules = &engine.rules;
    let (fp, result) = if dir.exists() {
        match fleetprompt_workflows::read_dir(dir) {
            Ok(sources) => {
                let fp = fingerprint_of(&sources);
                let result = RuleSet::from_sources(sources.clone(), &check_options(engine))
                    .and_then(|set| {
                        let emptied = emptied_files(&rules.current(), &set, &sources);
                        if emptied.is_empty() {
                            Ok(set)
                        } else {
                            Err(LoadError::Invalid(emptied))
                        }
                    });
                (Some(fp), result)
            }
            Err(e) => (None, Err(e)),
        }
    } else {
        (None, Ok(RuleSet::empty()))
    };
    let mut status = rules.status.lock().expect("rules status lock");
    status.dir = Some(dir.to_owned());
    status.fingerprint = fp;
    match result {
        Ok(set) => {
            let n = set.len();
            *rules.active.write().expect("rules lock") = Arc::new(set);
            status.loaded_at = Some(now_ms());
            status.last_error = None;
            status.last_error_at = None;
            counter!(WORKFLOW_RELOADS, "result" => "ok").increment(1);
            tracing::info!(dir = %dir.display(), rules = n, "workflow rules loaded");
            Ok(n)
        }
        Err(e) => {
            let text = e.report();
            status.last_error = Some(text.clone());
            status.last_error_at = Some(now_ms());
            counter!(WORKFLOW_RELOADS, "result" => "error").increment(1);
            tracing::error!(dir = %dir.display(), errors = %text, "workflow rules refused; the last good set stays active");
            Err(e)
        }
    }
}

/// Watches `dir` (by polling its files' contents) and reloads a change once
/// it has settled for [`SETTLE`].
pub async fn watch(
    engine: Arc<Engine>,
    dir: PathBuf,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // The changed contents last seen and since when they have not changed.
    let mut settling: Option<(Option<String>, tokio::time::Instant)> = None;
    loop {
        let wait = if settling.is_some() {
            SETTLE_POLL.min(every)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let seen = engine.rules.status().fingerprint;
        let now = fingerprint(&dir);
        if now == seen {
            settling = None;
            continue;
        }
        match &settling {
            Some((fp, since)) if *fp == now => {
                if since.elapsed() >= SETTLE {
                    settling = None;
                    let _ = load(&engine, &dir);
                }
            }
            _ => settling = Some((now, tokio::time::Instant::now())),
        }
    }
}
