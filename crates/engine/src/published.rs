//! Rule files tenants publish over the admin API (and `workflows push`):
//! checked against the tenant's whole rule set before anything is stored,
//! stored with their history, announced on the tenant's own subject, and
//! loaded by every node (see [`crate::rules`]). Also the backtest, which
//! runs candidate files over stored signals without writing anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{Origin, TenantId};
use fleetprompt_store::directive;
use fleetprompt_store::signal::ReplayFilter;
use fleetprompt_store::workflow::{self as store, Published, WorkflowFileRow, WorkflowVersionRow};
use fleetprompt_workflows::{Diagnostic, RuleSet, RuleSource, RuleSummary, Scope};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::routing::{Pending, SignalView, TrialDirective};
use crate::rules::{published_name, published_path};
use crate::{Engine, EngineError};

/// The longest published file, in bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// The most files one check, backtest or push may carry.
pub const MAX_FILES: usize = 100;

/// The longest window a backtest may cover.
pub const MAX_BACKTEST_WINDOW_MS: i64 = 31 * 24 * 3600 * 1000;

/// The most signals a backtest may route.
pub const MAX_BACKTEST_SIGNALS: usize = 10_000;

/// Why a file name is refused, if it is: a published file is named like a
/// file of a rules directory (`escalation.toml`), so a directory can be
/// pushed as it is.
pub fn check_name(name: &str) -> Result<(), String> {
    let stem = name.strip_suffix(".toml").unwrap_or_default();
    let ok = !stem.is_empty()
        && name.len() <= 100
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !stem.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "file name {name:?} must end in .toml and otherwise hold only letters, digits, `_`, `-` and `.` (at most 100 characters)"
        ))
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn invalid(field: &'static str, reason: String) -> EngineError {
    EngineError::Validation(fleetprompt_core::signal::ValidationError::Invalid { field, reason })
}

/// What checking candidate files found: the tenant's rules if they were
/// published.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Every rule the tenant would have, defaults included.
    pub rules: Vec<RuleSummary>,
    /// Warnings about the tenant's published files (an `on` that no known
    /// signal type matches): they do not stop a publish.
    pub warnings: Vec<Diagnostic>,
}

/// What publishing one file did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The file's name.
    pub name: String,
    /// SHA-256 of its text.
    pub sha256: String,
    /// Its version now.
    pub version: i64,
    /// `false` when the live version had the same text (nothing written).
    pub changed: bool,
    /// The ids of the rules it holds.
    pub rules: Vec<String>,
    /// Warnings about this file (see [`CheckReport::warnings`]).
    pub warnings: Vec<Diagnostic>,
}

/// One publish or delete, as its signal tells it.
#[derive(Clone, Copy)]
struct Change<'a> {
    signal_type: &'static str,
    name: &'a str,
    sha256: &'a str,
    version: i64,
}

/// A published file with its history.
#[derive(Debug, Clone)]
pub struct FileWithHistory {
    /// The live version; `None` once deleted.
    pub file: Option<WorkflowFileRow>,
    /// Every publish and delete, oldest first.
    pub history: Vec<WorkflowVersionRow>,
}

/// The candidate window and files of a backtest.
#[derive(Debug, Clone)]
pub struct BacktestRequest {
    /// File name -> TOML text: published over the tenant's current files.
    pub files: BTreeMap<String, String>,
    /// Signals recorded at or after this.
    pub since: Millis,
    /// Signals recorded before this.
    pub until: Millis,
}

/// How often one rule fired in a backtest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleCount {
    /// Signals it matched.
    pub matched: u64,
    /// Signals it skipped (condition false, throttle, nothing configured).
    pub skipped: u64,
    /// Signals it failed on.
    pub errors: u64,
    /// Directives it would create (or created).
    pub directives: u64,
}

/// What the candidate rules would do with a window's signals, and what the
/// current rules did with them.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// Signals in the window.
    pub signals: u64,
    /// Per rule id, with the candidate rules.
    pub rules: BTreeMap<String, RuleCount>,
    /// Every directive the candidate rules would plan, in signal order.
    pub directives: Vec<TrialDirective>,
    /// Of those, the ones that would be new.
    pub directives_created: u64,
    /// Of those, the ones whose dedupe key is taken.
    pub directives_deduplicated: u64,
    /// What the rules in force did for the same signals: the directives
    /// stored with a rule as their origin and one of these signals as cause.
    pub current: CurrentReport,
}

/// The directives rules actually created for a backtest's signals.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentReport {
    /// Per rule id.
    pub rules: BTreeMap<String, RuleCount>,
    /// Every one, in signal order.
    pub directives: Vec<serde_json::Value>,
    /// How many.
    pub directives_created: u64,
}

impl Engine {
    /// The warnings about `slug`'s published files in `set`, each naming
    /// its file by its published name.
    fn published_warnings(&self, slug: &str, set: &RuleSet) -> Vec<Diagnostic> {
        let known = crate::handlers::signal_types(self.handlers());
        set.unknown_signal_types(&known)
            .into_iter()
            .filter_map(|mut d| {
                let (owner, name) = published_name(&d.file)?;
                if owner != slug {
                    return None;
                }
                d.file = PathBuf::from(name);
                Some(d)
            })
            .collect()
    }

    /// The sources of the tenant's rule set with `files` published over its
    /// current published files (`None` text: deleted).
    async fn candidate_sources(
        &self,
        tenant: TenantId,
        live: Vec<WorkflowFileRow>,
        files: &BTreeMap<String, Option<String>>,
    ) -> Result<(String, Vec<RuleSource>), EngineError> {
        let slug = self.tenant_slug(tenant).await?;
        let scope = Scope::Tenant(slug.clone());
        let mut sources: Vec<RuleSource> = self
            .rules()
            .disk_sources()
            .into_iter()
            .filter(|s| s.scope.applies_to(&slug))
            .collect();
        let mut mine: BTreeMap<String, Vec<u8>> = live
            .into_iter()
            .map(|f| (f.name, f.body.into_bytes()))
            .collect();
        for (name, text) in files {
            match text {
                Some(t) => mine.insert(name.clone(), t.clone().into_bytes()),
                None => mine.remove(name),
            };
        }
        sources.extend(mine.into_iter().map(|(name, bytes)| RuleSource {
            path: published_path(&slug, &name),
            scope: scope.clone(),
            bytes,
        }));
        Ok((slug, sources))
    }

    /// Builds the tenant's rule set as it would be with `files` published;
    /// the problems name published files by their name alone.
    async fn candidate_set(
        &self,
        tenant: TenantId,
        live: Vec<WorkflowFileRow>,
        files: &BTreeMap<String, Option<String>>,
    ) -> Result<(String, RuleSet), EngineError> {
        for (name, text) in files {
            check_name(name).map_err(|r| invalid("name", r))?;
            if text.as_ref().is_some_and(|t| t.len() > MAX_FILE_BYTES) {
                return Err(invalid(
                    "body",
                    format!("{name} is longer than {MAX_FILE_BYTES} bytes"),
                ));
            }
        }
        if files.len() > MAX_FILES {
            return Err(invalid(
                "files",
                format!("at most {MAX_FILES} files at once"),
            ));
        }
        let (slug, sources) = self.candidate_sources(tenant, live, files).await?;
        let set =
            RuleSet::from_sources(sources, &crate::rules::check_options(self)).map_err(|e| {
                let diagnostics = e
                    .diagnostics()
                    .into_iter()
                    .map(|mut d| {
                        if let Some((_, name)) = published_name(&d.file) {
                            d.file = PathBuf::from(name);
                        }
                        d
                    })
                    .collect::<Vec<Diagnostic>>();
                EngineError::InvalidWorkflow(diagnostics)
            })?;
        Ok((slug, set))
    }

    /// Checks candidate files (name -> TOML) as they would be published,
    /// together with the tenant's other rules; writes nothing.
    pub async fn check_workflow_files(
        &self,
        tenant: TenantId,
        files: &BTreeMap<String, String>,
    ) -> Result<CheckReport, EngineError> {
        let files = files
            .iter()
            .map(|(n, t)| (n.clone(), Some(t.clone())))
            .collect();
        let live = store::list(self.db(), tenant).await?;
        let (slug, set) = self.candidate_set(tenant, live, &files).await?;
        let rules = set
            .summaries()
            .into_iter()
            .filter(|r| r.scope.applies_to(&slug))
            .collect();
        let warnings = self.published_warnings(&slug, &set);
        Ok(CheckReport { rules, warnings })
    }

    /// Publishes one file, if the tenant's rules stay valid with it: stores
    /// the version, records `workflow.published` on `tenant:<id>` and makes
    /// it active on this node before answering (the others follow on the
    /// config notice).
    pub async fn publish_workflow_file(
        &self,
        tenant: TenantId,
        name: &str,
        text: &str,
        actor: Origin,
    ) -> Result<PublishReport, EngineError> {
        let changes = BTreeMap::from([(name.to_owned(), Some(text.to_owned()))]);
        let mut done = self.change_workflow_files(tenant, &changes, actor).await?;
        Ok(done.remove(0))
    }

    /// Deletes one published file (its history stays), records
    /// `workflow.deleted`, and drops its rules on this node before
    /// answering.
    pub async fn delete_workflow_file(
        &self,
        tenant: TenantId,
        name: &str,
        actor: Origin,
    ) -> Result<(), EngineError> {
        let changes = BTreeMap::from([(name.to_owned(), None)]);
        let done = self.change_workflow_files(tenant, &changes, actor).await?;
        if done.iter().any(|d| d.changed) {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("workflow file {name:?}")))
        }
    }

    /// Publishes (`Some` text) and deletes (`None`) files together, in one
    /// transaction, if the tenant's rules are valid with all of them: a
    /// rule may move from one file to another in one push. Reports each
    /// change in name order (a delete of a file that does not exist is
    /// reported unchanged, with an empty hash).
    pub async fn change_workflow_files(
        &self,
        tenant: TenantId,
        changes: &BTreeMap<String, Option<String>>,
        actor: Origin,
    ) -> Result<Vec<PublishReport>, EngineError> {
        let mut tx = self.db().begin().await?;
        store::lock(&mut tx, tenant).await?;
        let live = store::list_in(&mut tx, tenant).await?;
        let (slug, set) = self.candidate_set(tenant, live, changes).await?;
        let summaries = set.summaries();
        let warnings = self.published_warnings(&slug, &set);
        let at = now_ms();
        let mut done = Vec::new();
        for (name, text) in changes {
            let report = match text {
                Some(text) => {
                    let path = published_path(&slug, name);
                    let rules = summaries
                        .iter()
                        .filter(|r| r.file == path)
                        .map(|r| r.id.clone())
                        .collect();
                    let sha256 = sha256_hex(text);
                    let (version, changed) =
                        match store::publish(&mut tx, tenant, name, text, &sha256, &actor, at)
                            .await?
                        {
                            Published::New(v) => (v, true),
                            Published::Unchanged(v) => (v, false),
                        };
                    if changed {
                        let change = Change {
                            signal_type: "workflow.published",
                            name,
                            sha256: &sha256,
                            version,
                        };
                        self.record_change(&mut tx, tenant, &change, &actor).await?;
                    }
                    let warnings = warnings
                        .iter()
                        .filter(|w| w.file.as_os_str() == name.as_str())
                        .cloned()
                        .collect();
                    PublishReport {
                        name: name.clone(),
                        sha256,
                        version,
                        changed,
                        rules,
                        warnings,
                    }
                }
                None => match store::delete(&mut tx, tenant, name, &actor, at).await? {
                    Some((sha256, version)) => {
                        let change = Change {
                            signal_type: "workflow.deleted",
                            name,
                            sha256: &sha256,
                            version,
                        };
                        self.record_change(&mut tx, tenant, &change, &actor).await?;
                        PublishReport {
                            name: name.clone(),
                            sha256,
                            version,
                            changed: true,
                            rules: Vec::new(),
                            warnings: Vec::new(),
                        }
                    }
                    None => PublishReport {
                        name: name.clone(),
                        sha256: String::new(),
                        version: 0,
                        changed: false,
                        rules: Vec::new(),
                        warnings: Vec::new(),
                    },
                },
            };
            done.push(report);
        }
        tx.commit().await?;
        if done.iter().any(|d| d.changed) {
            crate::rules::reload_published(self).await?;
        }
        Ok(done)
    }

    /// Records a publish or delete on the tenant's own subject, so its
    /// timeline is its audit log.
    async fn record_change(
        &self,
        tx: &mut fleetprompt_store::Tx,
        tenant: TenantId,
        change: &Change<'_>,
        actor: &Origin,
    ) -> Result<(), EngineError> {
        let Change {
            signal_type,
            name,
            sha256,
            version,
        } = *change;
        crate::audit::record(
            self,
            tx,
            tenant,
            signal_type,
            json!({ "name": name, "sha256": sha256, "version": version }),
            format!("{signal_type}:{name}:{version}"),
            actor,
        )
        .await
    }

    /// A tenant's published files.
    pub async fn workflow_files(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<WorkflowFileRow>, EngineError> {
        Ok(store::list(self.db(), tenant).await?)
    }

    /// One published file and its history; not found when it was never
    /// published.
    pub async fn workflow_file(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<FileWithHistory, EngineError> {
        let file = store::get(self.db(), tenant, name).await?;
        let history = store::history(self.db(), tenant, name).await?;
        if file.is_none() && history.is_empty() {
            return Err(EngineError::NotFound(format!("workflow file {name:?}")));
        }
        Ok(FileWithHistory { file, history })
    }

    /// Runs candidate files (published over the tenant's current ones) over
    /// the tenant's signals recorded in the window, through the routing
    /// the live engine uses, as a dry run: nothing is written or sent.
    pub async fn backtest(
        &self,
        tenant: TenantId,
        req: &BacktestRequest,
    ) -> Result<BacktestReport, EngineError> {
        if req.until <= req.since {
            return Err(invalid("until", "must be after `since`".into()));
        }
        if req.until - req.since > MAX_BACKTEST_WINDOW_MS {
            return Err(EngineError::TooMuch(format!(
                "a backtest covers at most {} days; split the window",
                MAX_BACKTEST_WINDOW_MS / (24 * 3600 * 1000)
            )));
        }
        let files = req
            .files
            .iter()
            .map(|(n, t)| (n.clone(), Some(t.clone())))
            .collect();
        let live = store::list(self.db(), tenant).await?;
        let (_, set) = self.candidate_set(tenant, live, &files).await?;
        let filter = ReplayFilter {
            signal_type: None,
            subject: None,
            since: Some(req.since),
            until: Some(req.until),
        };
        // One read past the bound tells a window that is too large.
        let rows = fleetprompt_store::signal::page_for_replay(
            self.db(),
            tenant,
            &filter,
            None,
            MAX_BACKTEST_SIGNALS as i64 + 1,
        )
        .await?;
        if rows.len() > MAX_BACKTEST_SIGNALS {
            return Err(EngineError::TooMuch(format!(
                "the window holds more than {MAX_BACKTEST_SIGNALS} signals; narrow it"
            )));
        }
        let views: Vec<(TenantId, SignalView<'_>)> = rows
            .iter()
            .map(|s| (tenant, crate::routing::stored_view(s)))
            .collect();
        let mut pending = Pending::default();
        let report = self.route_with(&set, None, &views, &mut pending).await?;
        let mut rules: BTreeMap<String, RuleCount> = BTreeMap::new();
        for (rule, outcome) in pending.verdicts() {
            let c = rules.entry(rule.to_owned()).or_default();
            match outcome {
                "matched" => c.matched += 1,
                "error" => c.errors += 1,
                _ => c.skipped += 1,
            }
        }
        for d in &pending.trial {
            rules.entry(d.rule_id.clone()).or_default().directives += 1;
        }
        let actual = directive::created_by_rules(self.db(), tenant, req.since, req.until).await?;
        let mut current_rules: BTreeMap<String, RuleCount> = BTreeMap::new();
        for d in &actual {
            current_rules
                .entry(d.rule_id.clone())
                .or_default()
                .directives += 1;
        }
        let current = CurrentReport {
            rules: current_rules,
            directives_created: actual.len() as u64,
            directives: actual
                .iter()
                .map(|d| {
                    json!({
                        "signal_id": d.caused_by, "rule_id": d.rule_id, "kind": d.kind,
                        "args": d.args, "dedupe_key": d.dedupe_key,
                    })
                })
                .collect(),
        };
        Ok(BacktestReport {
            signals: rows.len() as u64,
            rules,
            directives: std::mem::take(&mut pending.trial),
            directives_created: report.directives_created,
            directives_deduplicated: report.directives_deduplicated,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_rule_file_names() {
        for ok in ["orders.toml", "a.b-c_d.toml", "X1.toml"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            ".toml",
            "..toml",
            ".hidden.toml",
            "orders",
            "orders.TOML",
            "a/b.toml",
            "a b.toml",
            "é.toml",
            &format!("{}.toml", "a".repeat(100)),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
