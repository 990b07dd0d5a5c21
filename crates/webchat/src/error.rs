//! Errors of the website chat package.

use fleetprompt_core::signal::ValidationError;
use fleetprompt_store::StoreError;

use fleetprompt_engine::EngineError;

/// What can go wrong in a website chat call.
#[derive(Debug, thiserror::Error)]
pub enum WebchatError {
    /// The widget token is missing, malformed, forged, expired, for a
    /// disabled site, or signed with a retired key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request's origin is not allowed, or the site is not active.
    #[error("{0}")]
    Forbidden(String),
    /// No such record for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// A message is longer than the site allows.
    #[error("message is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The site's limit.
        limit: usize,
    },
    /// Too many requests of this kind from one client address; retry after
    /// the given seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// The site asks for a proof of work before it issues a new visitor,
    /// and none was sent.
    #[error("this site asks for a proof of work: solve a challenge from POST /v1/widget/challenge")]
    ChallengeRequired,
    /// The proof of work sent is forged, expired, wrong or already used.
    #[error("the proof of work was refused: {0}")]
    ChallengeFailed(&'static str),
    /// An edit named the version of the record it read, and the record
    /// has changed since.
    #[error(
        "the site is at version {current}; this change was made against version {given} (read it again and retry)"
    )]
    VersionConflict {
        /// The record's version now.
        current: i64,
        /// The version the edit named.
        given: i64,
    },
    /// The input was refused; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The engine or the database failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for WebchatError {
    fn from(e: StoreError) -> Self {
        Self::Engine(e.into())
    }
}

/// Maps a store error to this layer's, a missing record becoming "`what`
/// not found": for `map_err` after reading one record.
pub(crate) fn or_not_found(what: &'static str) -> impl FnOnce(StoreError) -> WebchatError {
    move |e| match e {
        StoreError::NotFound { .. } => WebchatError::NotFound(what.into()),
        other => other.into(),
    }
}

/// A validation error on `field`.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> WebchatError {
    WebchatError::Invalid(ValidationError::Invalid {
        field,
        reason: reason.into(),
    })
}
