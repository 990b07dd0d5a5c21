//! The website chat package's pure parts: signed widget tokens, origin
//! allowlists, and the reduction of visitor data before it is stored.
//!
//! # Layout
//! - [`id`]: the package's ids (sites, conversations, messages, visitors).
//! - [`token`]: HMAC-SHA256 widget tokens (`fpw_…`), signed and verified.
//! - [`origin`]: exact scheme+host+port origin matching.
//! - [`visitor`]: keyed IP hashes, user-agent reduction, email checks.
//! - [`pow`]: HMAC-signed proof-of-work challenges for bootstrap.
//! - [`spam`]: the spam score of a visitor message.

pub mod id;
pub mod origin;
pub mod pow;
pub mod spam;
pub mod token;
pub mod visitor;
