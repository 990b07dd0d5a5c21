//! A site's widget settings: what the visitor sees and the abuse limits.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{WebchatError, invalid};

/// When the widget asks for the visitor's email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AskContact {
    /// Never.
    Off,
    /// Offered, may be skipped.
    Optional,
    /// Required before the first message.
    BeforeChat,
}

/// What a new visitor must do before bootstrap issues them a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Challenge {
    /// Nothing.
    None,
    /// Solve a small hash puzzle (see `crate::types::pow`).
    ProofOfWork,
}

/// Settings of one site, with defaults for everything left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSettings {
    /// Title of the chat panel.
    pub title: String,
    /// First line shown to the visitor.
    pub greeting: String,
    /// Whether the visitor must accept `consent_text` before anything is sent.
    pub consent_required: bool,
    /// The tenant's consent notice.
    pub consent_text: String,
    /// When to ask for an email address.
    pub ask_contact: AskContact,
    /// Accent colour, `#rrggbb`.
    pub color: String,
    /// Messages per minute one visitor may send.
    pub rate_limit_visitor_per_min: u32,
    /// Messages per minute the whole site may receive.
    pub rate_limit_site_per_min: u32,
    /// Messages per minute from one client address, across its visitors;
    /// never more than half the site's budget (see [`Self::address_share`]).
    pub rate_limit_address_per_min: u32,
    /// New visitors per minute one client address may start.
    pub rate_limit_new_visitors_per_min: u32,
    /// What a new visitor must do before they get a token.
    pub challenge: Challenge,
    /// The proof of work's base difficulty: the secret number is at most
    /// this (on average half as many SHA-256 hashes); doubled for every ten
    /// challenges an address took in the current minute.
    pub challenge_max_number: u64,
    /// Largest message, in bytes of UTF-8.
    pub max_message_bytes: u32,
    /// Seconds of silence after which a conversation is ended.
    pub idle_timeout_secs: u64,
    /// Lifetime of a widget token, in seconds.
    pub token_ttl_secs: u64,
    /// Whether notifications (Mattermost) may show the visitor's name and
    /// email. Off by default: a channel is often wider than the team.
    pub notify_contact: bool,
    /// Whether the console shows members the visitor's name, email,
    /// browser and system. Off, members see them masked (the PII setting
    /// of a site whose operators should not see who the visitors are).
    pub show_visitor_details: bool,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            title: "Chat with us".into(),
            greeting: "Hi! How can we help?".into(),
            consent_required: false,
            consent_text: String::new(),
            ask_contact: AskContact::Optional,
            color: "#2563eb".into(),
            rate_limit_visitor_per_min: 20,
            rate_limit_site_per_min: 600,
            rate_limit_address_per_min: 60,
            rate_limit_new_visitors_per_min: 60,
            challenge: Challenge::None,
            challenge_max_number: DEFAULT_CHALLENGE_MAX_NUMBER,
            max_message_bytes: 4096,
            idle_timeout_secs: 1800,
            token_ttl_secs: 900,
            notify_contact: false,
            show_visitor_details: true,
        }
    }
}

/// The default proof-of-work difficulty, measured to take well under 300 ms
/// on average in headless Chromium (docs/website-chat.md has the figures).
pub const DEFAULT_CHALLENGE_MAX_NUMBER: u64 = 20_000;

impl SiteSettings {
    /// Messages per minute one client address may send: its own limit,
    /// and at most half the site's budget, so one address (one attacker,
    /// rotating visitor ids) can never spend the whole site's minute.
    pub fn address_share(&self) -> u32 {
        self.rate_limit_address_per_min
            .min((self.rate_limit_site_per_min / 2).max(1))
    }

    /// Parses and checks settings; `null` means all defaults.
    pub fn parse(v: &Value) -> Result<Self, WebchatError> {
        let s: Self = if v.is_null() {
            Self::default()
        } else {
            serde_json::from_value(v.clone()).map_err(|e| invalid("settings", e.to_string()))?
        };
        s.check()?;
        Ok(s)
    }

    /// Reads stored settings, falling back to defaults for a damaged value
    /// (a site keeps working with safe limits rather than failing).
    pub fn from_stored(v: &Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    fn check(&self) -> Result<(), WebchatError> {
        let color_ok = self.color.len() == 7
            && self.color.starts_with('#')
            && self.color[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !color_ok {
            return Err(invalid("settings.color", "must be #rrggbb"));
        }
        if self.title.len() > 80 || self.greeting.len() > 500 || self.consent_text.len() > 2000 {
            return Err(invalid(
                "settings",
                "title ≤ 80, greeting ≤ 500, consent_text ≤ 2000 bytes",
            ));
        }
        if self.consent_required && self.consent_text.trim().is_empty() {
            return Err(invalid(
                "settings.consent_text",
                "is required when consent_required is true",
            ));
        }
        if !(1..=10_000).contains(&self.rate_limit_visitor_per_min)
            || !(1..=1_000_000).contains(&self.rate_limit_site_per_min)
        {
            return Err(invalid(
                "settings",
                "rate limits must be between 1 and 10000 (visitor), 1000000 (site) per minute",
            ));
        }
        if !(1..=1_000_000).contains(&self.rate_limit_address_per_min)
            || !(1..=1_000_000).contains(&self.rate_limit_new_visitors_per_min)
        {
            return Err(invalid(
                "settings",
                "rate_limit_address_per_min and rate_limit_new_visitors_per_min must be between 1 and 1000000",
            ));
        }
        if !(100..=5_000_000).contains(&self.challenge_max_number) {
            return Err(invalid(
                "settings.challenge_max_number",
                "must be between 100 and 5000000",
            ));
        }
        if !(16..=65_536).contains(&self.max_message_bytes) {
            return Err(invalid(
                "settings.max_message_bytes",
                "must be between 16 and 65536",
            ));
        }
        if !(1..=7 * 86_400).contains(&self.idle_timeout_secs) {
            return Err(invalid(
                "settings.idle_timeout_secs",
                "must be between 1 second and 7 days",
            ));
        }
        if !(2..=86_400).contains(&self.token_ttl_secs) {
            return Err(invalid(
                "settings.token_ttl_secs",
                "must be between 2 seconds and 1 day",
            ));
        }
        Ok(())
    }

    /// What the widget needs to know (no limits it could game).
    pub fn public(&self) -> Value {
        json!({
            "title": self.title,
            "greeting": self.greeting,
            "consent_required": self.consent_required,
            "consent_text": self.consent_text,
            "ask_contact": self.ask_contact,
            "color": self.color,
            "max_message_bytes": self.max_message_bytes,
            "challenge": self.challenge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_left_out() {
        let s = SiteSettings::parse(&json!({ "title": "Help" })).unwrap();
        assert_eq!(s.title, "Help");
        assert_eq!(s.rate_limit_visitor_per_min, 20);
        assert_eq!(s.max_message_bytes, 4096);
        assert_eq!(s.idle_timeout_secs, 1800);
    }

    #[test]
    fn one_address_gets_at_most_half_the_site_budget() {
        let s = SiteSettings::default();
        assert_eq!(s.address_share(), 60);
        let small = SiteSettings::parse(&json!({ "rate_limit_site_per_min": 5 })).unwrap();
        assert_eq!(small.address_share(), 2);
        let one = SiteSettings::parse(&json!({ "rate_limit_site_per_min": 1 })).unwrap();
        assert_eq!(one.address_share(), 1);
        let pow = SiteSettings::parse(&json!({ "challenge": "proof_of_work" })).unwrap();
        assert_eq!(pow.challenge, Challenge::ProofOfWork);
        assert!(SiteSettings::parse(&json!({ "challenge": "captcha" })).is_err());
    }

    #[test]
    fn refuses_unknown_and_out_of_range_settings() {
        assert!(SiteSettings::parse(&json!({ "tenant_id": "x" })).is_err());
        assert!(SiteSettings::parse(&json!({ "color": "red" })).is_err());
        assert!(SiteSettings::parse(&json!({ "consent_required": true })).is_err());
        assert!(SiteSettings::parse(&json!({ "idle_timeout_secs": 0 })).is_err());
    }
}
