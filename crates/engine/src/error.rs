//! Errors of the engine layer.

use fleetprompt_core::signal::ValidationError;
use fleetprompt_store::StoreError;

/// What can go wrong in an engine call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input was refused; nothing was written.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A directive's arguments do not fit its kind; nothing was written.
    #[error(transparent)]
    Args(#[from] crate::handler::ArgsError),
    /// A named record (destination, directive …) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was broken.
    #[error("{0}")]
    Conflict(String),
    /// A destination cannot be deleted: rules or unfinished directives
    /// need it (the message names them).
    #[error("{0}")]
    DestinationInUse(String),
    /// The record's state does not allow the change.
    #[error("{0}")]
    InvalidState(String),
    /// Something the directive needs is not set up for this tenant (a
    /// destination, an FAQ). Rules record this as *skipped*, not as an
    /// error, so shipped defaults stay quiet for tenants that did not opt in.
    #[error("{0}")]
    NotConfigured(String),
    /// The directive kind's (or endpoint's) package is uninstalled for this
    /// tenant. Rules record this as *skipped*, like [`Self::NotConfigured`].
    #[error("{0}")]
    PackageNotInstalled(String),
    /// Workflow rule files were refused; every problem is listed, each at
    /// its `file:line:col`. Nothing was published.
    #[error("{} problem(s) in workflow rules", .0.len())]
    InvalidWorkflow(Vec<fleetprompt_workflows::Diagnostic>),
    /// A request asks for more work than one call may do (a backtest over
    /// too long a window or too many signals); the message says the bound.
    #[error("{0}")]
    TooMuch(String),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// A destination's URL leads to an address outbound requests may not
    /// reach (loopback, private, link-local … and not allowed by the operator).
    #[error(transparent)]
    DestinationNotAllowed(#[from] fleetprompt_connectors::NotAllowed),
    /// A sealed secret could not be opened (wrong master key?).
    #[error(
        "stored secret cannot be opened: is FLEETPROMPT_MASTER_KEY the key it was sealed with?"
    )]
    Secret,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => Self::NotFound(what.into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::InvalidState(m) => Self::InvalidState(m),
            other => Self::Store(other),
        }
    }
}

impl From<fleetprompt_workflows::LoadError> for EngineError {
    fn from(e: fleetprompt_workflows::LoadError) -> Self {
        Self::InvalidWorkflow(e.diagnostics())
    }
}
