//! The website chat package's tables. Every function takes the
//! [`TenantId`](fleetprompt_core::TenantId) first, except the two lookups that
//! find a tenant: a site by its public widget key, and the idle sweep.
//!
//! # Layout
//! - [`installation`]: the tenant's IP-hash key (the installation itself is
//!   the platform's [`fleetprompt_store::installation`]).
//! - [`site`]: sites, their allowlists, settings and sealed signing secrets.
//! - [`identity`]: what is kept about a visitor (reduced), and the hash of
//!   their visitor secret.
//! - [`challenge`]: proof-of-work challenges already spent.
//! - [`conversation`]: conversations and the idle sweep.
//! - [`message`]: visitor, assistant and agent messages.
//! - [`batch`]: a batch of visitor messages written together (group commit).
//! - [`escalation`]: Mattermost threads per conversation and reply drafts.
//! - [`read`]: when each member last opened each conversation.
//! - [`saved_reply`]: the tenant's saved replies (snippets for the reply box).
//! - [`retention`]: the package's part of `fleetprompt prune`.

pub mod batch;
pub mod challenge;
pub mod conversation;
pub mod escalation;
pub mod identity;
pub mod installation;
pub mod message;
pub mod read;
pub mod retention;
pub mod saved_reply;
pub mod site;

// The package's ids as TEXT columns in their string form, read back with
// their own parse, as the platform's ids are.
fleetprompt_store::package::text_column!(crate::types::id::SiteId, |v| v.to_string());
fleetprompt_store::package::text_column!(crate::types::id::ConversationId, |v| v.to_string());
fleetprompt_store::package::text_column!(crate::types::id::MessageId, |v| v.to_string());
fleetprompt_store::package::text_column!(crate::types::id::VisitorId, |v| v.to_string());
fleetprompt_store::package::text_column!(crate::types::id::SavedReplyId, |v| v.to_string());
