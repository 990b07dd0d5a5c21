//! The website chat package's pure parts: signed widget tokens, origin
//! allowlists, and the reduction of visitor data before it is stored.
//!
//! # Layout
//! - [`token`]: HMAC-SHA256 widget tokens (`fpw_…`), signed and verified.
//! - [`origin`]: exact scheme+host+port origin matching.
//! - [`visitor`]: keyed IP hashes, user-agent reduction, email checks.

pub mod origin;
pub mod token;
pub mod visitor;
