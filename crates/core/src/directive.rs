//! Directives: the only way anything leaves the system. Each is its own job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{MemberId, TokenId};
use crate::signal::{ValidationError, check_dotted_name};

/// A platform-owned handler name, e.g. `webhook.post`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DirectiveKind(String);

impl DirectiveKind {
    /// Checks and wraps a kind.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_dotted_name("kind", &s)?;
        Ok(Self(s))
    }

    /// The kind as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where directives of this kind run.
    pub fn runner(&self) -> Runner {
        Runner::of_kind(&self.0)
    }
}

/// Which lane of the queue a directive belongs to: who may claim it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// The platform's own workers.
    Platform,
    /// An Edge Connector of the directive's tenant, over `/edge/v1`; the
    /// platform's workers never claim these (they need the tenant's own
    /// infrastructure, e.g. its mail server).
    Edge,
}

/// The kinds that run on an Edge Connector.
pub const EDGE_KINDS: &[&str] = &["email.send"];

impl Runner {
    /// The lane of a kind: fixed by the platform, never chosen by a caller.
    pub fn of_kind(kind: &str) -> Self {
        if EDGE_KINDS.contains(&kind) {
            Self::Edge
        } else {
            Self::Platform
        }
    }

    /// The runner as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::Edge => "edge",
        }
    }
}

impl TryFrom<String> for DirectiveKind {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<DirectiveKind> for String {
    fn from(k: DirectiveKind) -> String {
        k.0
    }
}

impl fmt::Display for DirectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DirectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Where a directive is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveStatus {
    /// Waiting for `next_attempt_at` (first run or a durable retry).
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Out of attempts, or failed permanently: the dead letter, re-drivable.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl DirectiveStatus {
    /// The status as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the directive will never run again by itself.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl FromStr for DirectiveStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => {
                return Err(ValidationError::Invalid {
                    field: "status",
                    reason: format!("unknown status {s:?}"),
                });
            }
        })
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The handler finished its work.
    Succeeded,
    /// A retriable failure: another attempt is scheduled.
    Retrying,
    /// A permanent failure, or the last attempt failed.
    Failed,
    /// The worker holding the lease vanished; the directive was reclaimed.
    LeaseExpired,
}

impl AttemptOutcome {
    /// Every outcome, for metric series registered before the first attempt.
    pub const ALL: [Self; 4] = [
        Self::Succeeded,
        Self::Retrying,
        Self::Failed,
        Self::LeaseExpired,
    ];

    /// The outcome as stored and used in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::LeaseExpired => "lease_expired",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "succeeded" => Self::Succeeded,
            "retrying" => Self::Retrying,
            "failed" => Self::Failed,
            "lease_expired" => Self::LeaseExpired,
            _ => {
                return Err(ValidationError::Invalid {
                    field: "outcome",
                    reason: format!("unknown outcome {s:?}"),
                });
            }
        })
    }
}

/// Who or what created a directive: the "who" of the audit timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Origin {
    /// A workflow rule, pinned to the exact file it came from.
    Rule {
        /// The rule's id.
        rule_id: String,
        /// SHA-256 of the rule file when it ran.
        file_hash: String,
    },
    /// The admin API, through the named token.
    Api {
        /// The token that authorised the call.
        token_id: TokenId,
    },
    /// A member of the tenant, signed in or through one of their personal
    /// tokens; the name is the one they had then, so the timeline says who
    /// acted without another lookup.
    Member {
        /// The member.
        member_id: MemberId,
        /// Their name at the time.
        name: String,
        /// The personal token used, if not a browser session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<TokenId>,
    },
    /// An operator acting in the console.
    Operator {
        /// The operator's name.
        user: String,
    },
    /// The platform itself (e.g. a cron tick or a bench run).
    System {
        /// What in the platform.
        component: String,
    },
}

impl Origin {
    /// The actor as one short string: `member:<id>`, `token:<id>`,
    /// `rule:<id>`, `operator:<name>` or `system:<component>`.
    pub fn actor(&self) -> String {
        match self {
            Self::Rule { rule_id, .. } => format!("rule:{rule_id}"),
            Self::Api { token_id } => format!("token:{token_id}"),
            Self::Member { member_id, .. } => format!("member:{member_id}"),
            Self::Operator { user } => format!("operator:{user}"),
            Self::System { component } => format!("system:{component}"),
        }
    }

    /// The acting member's or token's typed id (`mem_…`, `tok_…`), which
    /// needs no prefix of its own; [`Origin::actor`] for anything else.
    pub fn actor_id(&self) -> String {
        match self {
            Self::Api { token_id } => token_id.to_string(),
            Self::Member { member_id, .. } => member_id.to_string(),
            other => other.actor(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            DirectiveStatus::Pending,
            DirectiveStatus::Running,
            DirectiveStatus::Succeeded,
            DirectiveStatus::Failed,
            DirectiveStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<DirectiveStatus>().unwrap(), s);
        }
        assert!("done".parse::<DirectiveStatus>().is_err());
    }

    #[test]
    fn only_edge_kinds_run_on_the_edge() {
        let email = DirectiveKind::parse("email.send").unwrap();
        assert_eq!(email.runner(), Runner::Edge);
        let hook = DirectiveKind::parse("webhook.post").unwrap();
        assert_eq!(hook.runner(), Runner::Platform);
        assert_eq!(Runner::Edge.as_str(), "edge");
    }

    #[test]
    fn origin_is_tagged_json() {
        let o = Origin::Rule {
            rule_id: "r1".into(),
            file_hash: "ab".into(),
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["type"], "rule");
        assert_eq!(serde_json::from_value::<Origin>(v).unwrap(), o);
    }
}
