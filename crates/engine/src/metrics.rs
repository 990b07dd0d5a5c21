//! Every metric the engine exports, named and described in one place.
//!
//! Label values are bounded: directive kinds are platform-owned, outcomes are
//! an enum, and signal types outside the platform's namespaces are counted
//! as `custom` so a tenant cannot blow up the series count.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Signals recorded, by type.
pub const SIGNALS_RECORDED: &str = "fleetprompt_signals_recorded_total";
/// Directives created, by kind.
pub const DIRECTIVES_CREATED: &str = "fleetprompt_directives_created_total";
/// Directive creations refused as duplicates, by kind.
pub const DIRECTIVES_DEDUPLICATED: &str = "fleetprompt_directives_deduplicated_total";
/// Attempts finished, by kind and outcome.
pub const ATTEMPTS: &str = "fleetprompt_directive_attempts_total";
/// Attempt duration, by kind.
pub const ATTEMPT_DURATION: &str = "fleetprompt_directive_attempt_duration_seconds";
/// Delay scheduled before a retry, by kind.
pub const RETRY_DELAY: &str = "fleetprompt_directive_retry_delay_seconds";
/// Pending directives (due or delayed).
pub const PENDING: &str = "fleetprompt_directives_pending";
/// Failed directives (dead letters).
pub const FAILED: &str = "fleetprompt_directives_failed";
/// Age of the oldest due pending directive.
pub const OLDEST_PENDING_AGE: &str = "fleetprompt_directive_oldest_pending_age_seconds";
/// Directives claimed, in batches.
pub const CLAIM_BATCH: &str = "fleetprompt_directive_claim_batch_size";
/// Completions written per transaction.
pub const COMPLETE_BATCH: &str = "fleetprompt_directive_complete_batch_size";
/// Leases that expired (a worker vanished mid-attempt).
pub const LEASES_EXPIRED: &str = "fleetprompt_directive_leases_expired_total";
/// Workflow rule reloads, by result.
pub const WORKFLOW_RELOADS: &str = "fleetprompt_workflow_reloads_total";
/// Directives running in this process.
pub const IN_FLIGHT: &str = "fleetprompt_directives_in_flight";
/// Destination circuit breakers that opened (or opened again after a failed probe).
pub const BREAKERS_OPENED: &str = "fleetprompt_destination_breakers_opened_total";
/// Destinations whose circuit breaker is open or half-open in this process.
pub const BREAKERS_OPEN: &str = "fleetprompt_destination_breakers_open";
/// Claimed directives handed back unattempted (their destination had no room).
pub const UNCLAIMED: &str = "fleetprompt_directives_unclaimed_total";
/// Edge-lane tasks waiting for a connector (due or delayed).
pub const EDGE_PENDING: &str = "fleetprompt_edge_tasks_pending";
/// When each Edge Connector was last heard from, by connector id.
pub const EDGE_LAST_SEEN: &str = "fleetprompt_edge_connector_last_seen_timestamp_seconds";
/// Edge tasks by what happened to them: `claimed` by a connector, `sent`
/// (SMTP accepted), `retry` (a failed attempt that will be tried again),
/// `failed` (for good).
pub const EDGE_TASKS: &str = "fleetprompt_edge_tasks_total";
/// Reply emails reported by Edge Connectors, by outcome: `matched` (from
/// the team: sent to the visitor), `stranger` (recorded, not sent),
/// `duplicate` (seen before), `ignored` (answers none of our emails).
pub const INBOUND_EMAILS: &str = "fleetprompt_edge_inbound_emails_total";

/// The values of [`EDGE_TASKS`]'s `event` label.
pub const EDGE_TASK_EVENTS: &[&str] = &["claimed", "sent", "retry", "failed"];
/// The values of [`INBOUND_EMAILS`]'s `outcome` label.
pub const INBOUND_OUTCOMES: &[&str] = &["matched", "stranger", "duplicate", "ignored"];

/// Describes every engine metric to the recorder. Call once at start.
pub fn describe() {
    describe_counter!(
        EDGE_TASKS,
        Unit::Count,
        "Edge tasks (email.send) by event: claimed by a connector, sent, retry, failed for good."
    );
    describe_counter!(
        INBOUND_EMAILS,
        Unit::Count,
        "Reply emails reported by Edge Connectors, by outcome: matched, stranger, duplicate, ignored."
    );
    // Registered at zero, so dashboards and alerts see the series before
    // the first email (a counter that appears only on its first increment
    // makes `rate()` and `increase()` miss it).
    for event in EDGE_TASK_EVENTS {
        counter!(EDGE_TASKS, "event" => *event).absolute(0);
    }
    for outcome in INBOUND_OUTCOMES {
        counter!(INBOUND_EMAILS, "outcome" => *outcome).absolute(0);
    }
    describe_counter!(
        SIGNALS_RECORDED,
        Unit::Count,
        "Signals recorded, by type (non-platform types as `custom`)."
    );
    describe_counter!(
        DIRECTIVES_CREATED,
        Unit::Count,
        "Directives created, by kind."
    );
    describe_counter!(
        DIRECTIVES_DEDUPLICATED,
        Unit::Count,
        "Directive creations that found their dedupe key taken, by kind."
    );
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "Directive attempts finished, by kind and outcome."
    );
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of directive attempts, by kind."
    );
    describe_histogram!(
        RETRY_DELAY,
        Unit::Seconds,
        "Delay scheduled before a directive's next attempt, by kind."
    );
    describe_gauge!(
        PENDING,
        Unit::Count,
        "Pending platform directives, due or delayed (edge tasks are counted apart)."
    );
    describe_gauge!(
        EDGE_PENDING,
        Unit::Count,
        "Pending edge tasks (email.send …), due or delayed, waiting for their tenant's Edge Connector."
    );
    describe_gauge!(
        FAILED,
        Unit::Count,
        "Failed directives (dead letters awaiting a re-drive)."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "How long the oldest due pending directive has waited."
    );
    describe_histogram!(
        CLAIM_BATCH,
        Unit::Count,
        "Directives claimed per claim statement."
    );
    describe_histogram!(
        COMPLETE_BATCH,
        Unit::Count,
        "Completions written per transaction."
    );
    describe_counter!(
        LEASES_EXPIRED,
        Unit::Count,
        "Directive leases that expired because their worker vanished."
    );
    describe_counter!(
        WORKFLOW_RELOADS,
        Unit::Count,
        "Workflow rule set loads, by result (ok, error)."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Directives claimed and not yet completed by this process."
    );
    describe_counter!(
        BREAKERS_OPENED,
        Unit::Count,
        "Destination circuit breakers opened by failing attempts (a failed probe counts again)."
    );
    describe_gauge!(
        BREAKERS_OPEN,
        Unit::Count,
        "Destinations whose circuit breaker is open or half-open in this process (their directives are deferred)."
    );
    describe_counter!(
        UNCLAIMED,
        Unit::Count,
        "Claimed directives handed back unattempted because their destination had no room."
    );
    describe_gauge!(
        EDGE_LAST_SEEN,
        Unit::Seconds,
        "Unix time of each Edge Connector's last heartbeat, by connector id (read from the database, so every node reports every connector)."
    );
}

/// Registers at zero every series whose label values are known before any
/// traffic: each directive kind (from the handler registry) on the
/// per-kind counters and histograms, every attempt outcome, both reload
/// results, and the `custom` signal type. A series that appears only on its
/// first event leaves a dashboard panel at "No data" and makes `rate()` and
/// `increase()` miss that first event. Call once the handlers are known.
///
/// [`EDGE_LAST_SEEN`] is not among them: it is a gauge per connector, and
/// there is no honest value for a connector that does not exist.
pub fn register_known(kinds: &[&str]) {
    for kind in kinds {
        let kind = (*kind).to_owned();
        counter!(DIRECTIVES_CREATED, "kind" => kind.clone()).absolute(0);
        counter!(DIRECTIVES_DEDUPLICATED, "kind" => kind.clone()).absolute(0);
        counter!(LEASES_EXPIRED, "kind" => kind.clone()).absolute(0);
        for outcome in fleetprompt_core::AttemptOutcome::ALL {
            counter!(ATTEMPTS, "kind" => kind.clone(), "outcome" => outcome.as_str()).absolute(0);
        }
        // A histogram handle, once registered, is exported with empty
        // buckets until its first sample.
        let _ = histogram!(ATTEMPT_DURATION, "kind" => kind.clone());
        let _ = histogram!(RETRY_DELAY, "kind" => kind);
    }
    for result in ["ok", "error"] {
        counter!(WORKFLOW_RELOADS, "result" => result).absolute(0);
    }
    counter!(SIGNALS_RECORDED, "type" => "custom").absolute(0);
    for h in [CLAIM_BATCH, COMPLETE_BATCH] {
        let _ = histogram!(h);
    }
}

const PLATFORM_NAMESPACES: &[&str] = &["directive.", "email.", "cron.", "workflow."];

/// A signal type as its label value: kept when it is in the platform's
/// namespaces or a loaded package's (the first segment of any signal type
/// its manifest lists), `custom` otherwise.
fn bounded_type(t: &str) -> &str {
    let packaged = || {
        crate::package::all().iter().any(|m| {
            m.signals.iter().any(|s| {
                s.signal_type.split_once('.').is_some_and(|(ns, _)| {
                    t.len() > ns.len() && t.starts_with(ns) && t.as_bytes()[ns.len()] == b'.'
                })
            })
        })
    };
    if (PLATFORM_NAMESPACES.iter().any(|p| t.starts_with(p)) || packaged()) && t.len() <= 64 {
        t
    } else {
        "custom"
    }
}

/// Counts a recorded signal (by type, bounded).
pub fn signal_recorded(signal_type: &str) {
    counter!(SIGNALS_RECORDED, "type" => bounded_type(signal_type).to_owned()).increment(1);
}

/// Counts a created directive (by kind).
pub fn directive_created(kind: &str) {
    counter!(DIRECTIVES_CREATED, "kind" => kind.to_owned()).increment(1);
}

pub(crate) fn directive_deduplicated(kind: &str) {
    counter!(DIRECTIVES_DEDUPLICATED, "kind" => kind.to_owned()).increment(1);
}

pub(crate) fn attempt(kind: &str, outcome: &'static str, duration: Duration) {
    counter!(ATTEMPTS, "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
    histogram!(ATTEMPT_DURATION, "kind" => kind.to_owned()).record(duration.as_secs_f64());
}

pub(crate) fn retry_scheduled(kind: &str, delay: Duration) {
    histogram!(RETRY_DELAY, "kind" => kind.to_owned()).record(delay.as_secs_f64());
}

pub(crate) fn backlog(pending: i64, failed: i64, oldest_ms: Option<i64>) {
    gauge!(PENDING).set(pending as f64);
    gauge!(FAILED).set(failed as f64);
    gauge!(OLDEST_PENDING_AGE).set(oldest_ms.unwrap_or(0).max(0) as f64 / 1000.0);
}

pub(crate) fn claimed(n: usize) {
    histogram!(CLAIM_BATCH).record(n as f64);
}

pub(crate) fn completed_batch(n: usize) {
    histogram!(COMPLETE_BATCH).record(n as f64);
}

pub(crate) fn lease_expired(kind: &str) {
    counter!(LEASES_EXPIRED, "kind" => kind.to_owned()).increment(1);
}

pub(crate) fn in_flight(n: usize) {
    gauge!(IN_FLIGHT).set(n as f64);
}

pub(crate) fn breaker_opened() {
    counter!(BREAKERS_OPENED).increment(1);
}

pub(crate) fn breakers_open(n: usize) {
    gauge!(BREAKERS_OPEN).set(n as f64);
}

pub(crate) fn unclaimed(n: usize) {
    counter!(UNCLAIMED).increment(n as u64);
}

pub(crate) fn edge_backlog(pending: i64) {
    gauge!(EDGE_PENDING).set(pending as f64);
}

/// Connector ids are bounded by what operators register (one or two per
/// mail server), never by traffic, so they are safe as a label.
pub(crate) fn edge_last_seen(connector: &str, at_ms: i64) {
    gauge!(EDGE_LAST_SEEN, "connector" => connector.to_owned()).set(at_ms as f64 / 1000.0);
}

pub(crate) fn edge_tasks(event: &'static str, n: usize) {
    counter!(EDGE_TASKS, "event" => event).increment(n as u64);
}

/// Counts a reply email an Edge Connector reported, by outcome.
pub fn inbound_email(outcome: &'static str) {
    counter!(INBOUND_EMAILS, "outcome" => outcome).increment(1);
}
