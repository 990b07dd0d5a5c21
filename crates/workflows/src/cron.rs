//! Schedule triggers: parsing 6/7-field cron expressions, computing the next
//! tick in the rule's timezone, and planning what one tick produces.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::expr::ExprProblem;
use crate::route::{Evaluator, Outcome, RouteContext, RuleEvaluation};
use crate::rule::{RuleSet, Scope};

/// A rule triggered by a schedule, as the engine's scheduler sees it.
#[derive(Debug, Clone)]
pub struct CronTrigger {
    pub rule_id: String,
    pub scope: Scope,
    pub file: PathBuf,
    pub file_hash: String,
    /// The expression as written (`"0 */5 * * * *"`).
    pub schedule: String,
    pub timezone: Tz,
    pub(crate) parsed: cron::Schedule,
    /// Index of the rule in the set.
    pub(crate) rule: usize,
}

impl CronTrigger {
    /// The first tick strictly after `after`, computed in the rule's timezone
    /// (so `0 0 9 * * *` in Europe/Paris follows daylight saving time), or
    /// `None` when the schedule has no future tick (a past year).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed
            .after(&after.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The idempotency key of one tick (`cron:<rule>:<unix seconds>`): nodes
    /// that race on the same tick produce the same key, so it fires once.
    pub fn tick_key(&self, tick: DateTime<Utc>) -> String {
        tick_key(&self.rule_id, tick)
    }
}

pub(crate) fn tick_key(rule_id: &str, tick: DateTime<Utc>) -> String {
    format!("cron:{rule_id}:{}", tick.timestamp())
}

/// A signal a schedule rule asks the engine to ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedSignal {
    #[serde(rename = "type")]
    pub r#type: String,
    pub subject: String,
    pub payload: serde_json::Value,
    /// Idempotency key for ingesting the signal; `cron:<rule>:<tick>` unless
    /// the rule sets `key`.
    pub idempotency_key: String,
}

/// Parses a cron expression with seconds (6 fields, or 7 with a year).
/// Five-field crontab lines are refused rather than guessed at.
pub(crate) fn parse_schedule(text: &str) -> Result<cron::Schedule, ExprProblem> {
    let fields = text.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(ExprProblem {
            offset: None,
            message: format!(
                "invalid cron expression `{text}`: expected 6 fields (sec min hour day-of-month month day-of-week) or 7 with a year, found {fields}"
            ),
        });
    }
    cron::Schedule::from_str(text).map_err(|e| {
        // The cron crate renders "expr\n   ^\nreason": keep the reason and
        // use the caret's column as the position.
        let rendered = e.to_string();
        let mut lines = rendered.lines();
        let _expr = lines.next();
        let caret = lines.next().and_then(|l| l.find('^'));
        let reason: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
        let reason = if reason.is_empty() {
            "syntax error".to_owned()
        } else {
            reason.join(" ")
        };
        ExprProblem {
            offset: caret,
            message: format!("invalid cron expression `{text}`: {reason}"),
        }
    })
}

impl RuleSet {
    /// Every schedule rule (defaults and all tenants). A defaults rule fires
    /// once per tenant; a tenant rule only for its tenant.
    pub fn cron_rules(&self) -> &[CronTrigger] {
        &self.crons
    }

    /// Plans one tick of schedule rule `rule_id` of `scope` for
    /// `tenant_slug`: the directives (default dedupe key
    /// `cron:<rule>:<tick unix seconds>`) or the signal it emits. Templates
    /// see `tick` (RFC 3339), `tenant`, `site`, `now` and, in directives,
    /// `destination`. `None` if the set has no such schedule rule (e.g. it
    /// was removed by a reload).
    pub fn cron_tick(
        &self,
        scope: &Scope,
        rule_id: &str,
        tenant_slug: &str,
        tick: DateTime<Utc>,
        ctx: &RouteContext,
    ) -> Option<RuleEvaluation> {
        let index = *self.scope_index(scope)?.by_id.get(rule_id)?;
        let rule = &self.rules[index];
        if !matches!(rule.trigger, crate::rule::Trigger::Schedule(_)) {
            return None;
        }
        let eval = Evaluator::for_tick(self, tenant_slug, tick, ctx);
        let outcome = if rule.scope.applies_to(tenant_slug) {
            eval.evaluate(rule)
        } else {
            Outcome::Error {
                message: format!(
                    "rule `{rule_id}` belongs to {} and cannot fire for tenant `{tenant_slug}`",
                    rule.scope
                ),
            }
        };
        Some(eval.evaluation(rule, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn trigger(schedule: &str, tz: Tz) -> CronTrigger {
        CronTrigger {
            rule_id: "r".into(),
            scope: Scope::Defaults,
            file: PathBuf::new(),
            file_hash: String::new(),
            schedule: schedule.into(),
            timezone: tz,
            parsed: parse_schedule(schedule).unwrap_or_else(|p| panic!("{}", p.message)),
            rule: 0,
        }
    }

    #[test]
    fn next_tick_follows_the_timezone() {
        // 09:00 in Paris is 07:00 UTC in summer (CEST) and 08:00 in winter.
        let t = trigger("0 0 9 * * *", chrono_tz::Europe::Paris);
        let summer = Utc.with_ymd_and_hms(2025, 7, 1, 7, 30, 0).single();
        let summer = summer.unwrap_or_else(|| panic!("valid date"));
        assert_eq!(
            t.next_after(summer),
            Utc.with_ymd_and_hms(2025, 7, 2, 7, 0, 0).single()
        );
        let winter = Utc.with_ymd_and_hms(2025, 1, 1, 6, 0, 0).single();
        let winter = winter.unwrap_or_else(|| panic!("valid date"));
        assert_eq!(
            t.next_after(winter),
            Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).single()
        );
    }

    #[test]
    fn every_five_minutes_is_strictly_after() {
        let t = trigger("0 */5 * * * *", chrono_tz::UTC);
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 10, 5, 0).single();
        let at = at.unwrap_or_else(|| panic!("valid date"));
        assert_eq!(
            t.next_after(at),
            Utc.with_ymd_and_hms(2025, 1, 1, 10, 10, 0).single()
        );
        assert_eq!(t.tick_key(at), "cron:r:1735725900");
    }

    #[test]
    fn five_field_and_out_of_range_are_rejected() {
        assert!(parse_schedule("*/5 * * * *").is_err());
        let Err(p) = parse_schedule("0 61 * * * *") else {
            panic!("61 minutes accepted");
        };
        assert_eq!(p.offset, Some(2));
        assert!(p.message.contains("Minutes"), "{}", p.message);
    }
}

#[cfg(test)]
mod tick_tests {
    use super::*;
    use crate::testing::{load, rules, source, tenant};
    use chrono::TimeZone;
    use serde_json::json;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, h, m, 0)
            .single()
            .unwrap_or_else(|| panic!("valid date"))
    }

    const CRON: &str = r#"
[[rule]]
id = "digest"
schedule = "0 0 9 * * *"
timezone = "Europe/Paris"
when = 'has(site.domain)'
[rule.emit]
type = "digest.due"
subject = "digest:{{ tenant }}"
payload = { at = "{{ tick }}", site = "{{ site.domain }}" }

[[rule]]
id = "poll"
schedule = "0 */5 * * * *"
[[rule.directive]]
kind = "notify"
args = { tick = "{{ tick }}" }
[[rule.directive]]
kind = "email"
"#;

    #[test]
    fn cron_rules_list_schedule_and_timezone() {
        let set = rules(CRON);
        let crons = set.cron_rules();
        assert_eq!(crons.len(), 2);
        assert_eq!(crons[0].rule_id, "digest");
        assert_eq!(crons[0].timezone, chrono_tz::Europe::Paris);
        // 09:00 Paris on 1 March (CET, UTC+1) is 08:00 UTC.
        assert_eq!(crons[0].next_after(at(7, 0)), Some(at(8, 0)));
        assert_eq!(crons[1].next_after(at(7, 2)), Some(at(7, 5)));
    }

    #[test]
    fn a_tick_emits_a_signal_with_the_tick_key() {
        let set = rules(CRON);
        let ctx = RouteContext::new(json!({"domain": "shop.example"}), at(8, 0));
        let eval = set.cron_tick(&Scope::Defaults, "digest", "acme", at(8, 0), &ctx);
        let Some(RuleEvaluation {
            outcome: Outcome::Emitted { signal },
            ..
        }) = eval
        else {
            panic!("expected an emitted signal, got {eval:?}");
        };
        assert_eq!(signal.r#type, "digest.due");
        assert_eq!(signal.subject, "digest:acme");
        assert_eq!(
            signal.payload,
            json!({"at": "2025-03-01T08:00:00Z", "site": "shop.example"})
        );
        assert_eq!(
            signal.idempotency_key,
            format!("cron:digest:{}", at(8, 0).timestamp())
        );
        // The condition sees the site: without a domain the tick is skipped.
        let bare = RouteContext::new(serde_json::Value::Null, at(8, 0));
        let eval = set.cron_tick(&Scope::Defaults, "digest", "acme", at(8, 0), &bare);
        assert!(matches!(
            eval.map(|e| e.outcome),
            Some(Outcome::Skipped { .. })
        ));
    }

    #[test]
    fn a_tick_plans_directives_with_default_keys() {
        let set = rules(CRON);
        let ctx = RouteContext::new(json!({}), at(7, 5));
        let eval = set.cron_tick(&Scope::Defaults, "poll", "acme", at(7, 5), &ctx);
        let Some(RuleEvaluation {
            outcome: Outcome::Matched { directives },
            ..
        }) = eval
        else {
            panic!("expected directives, got {eval:?}");
        };
        let ts = at(7, 5).timestamp();
        assert_eq!(directives[0].dedupe_key, format!("cron:poll:{ts}"));
        assert_eq!(directives[1].dedupe_key, format!("cron:poll:{ts}:1"));
        assert_eq!(directives[0].args, json!({"tick": "2025-03-01T07:05:00Z"}));
        assert!(
            set.cron_tick(&Scope::Defaults, "nope", "acme", at(7, 5), &ctx)
                .is_none()
        );
    }

    #[test]
    fn a_tenant_schedule_fires_only_for_its_tenant() {
        let text = "[[rule]]\nid = \"t\"\nschedule = \"0 * * * * *\"\n[[rule.directive]]\nkind = \"notify\"\n";
        let set = load(vec![source("w/tenants/acme/t.toml", tenant("acme"), text)]);
        let set = set.unwrap_or_else(|e| panic!("{e}"));
        let ctx = RouteContext::new(json!({}), at(7, 0));
        let ok = set.cron_tick(&tenant("acme"), "t", "acme", at(7, 0), &ctx);
        assert!(matches!(
            ok.map(|e| e.outcome),
            Some(Outcome::Matched { .. })
        ));
        let wrong = set.cron_tick(&tenant("acme"), "t", "beta", at(7, 0), &ctx);
        assert!(matches!(
            wrong.map(|e| e.outcome),
            Some(Outcome::Error { .. })
        ));
    }
}
