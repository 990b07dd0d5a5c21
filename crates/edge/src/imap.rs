//! The reply watch: replies to our escalation emails, found in the
//! mailbox over IMAP and reported to the server (`POST /edge/v1/inbound`).
//!
//! - Connects with STARTTLS (Proton Mail Bridge: port 1143, its own
//!   self-signed, CA-flagged certificate, pinned like SMTP's), logs in,
//!   selects the mailbox (INBOX) and waits with IDLE; a server without IDLE
//!   is polled. Every wake-up (and every `--imap-poll-secs` regardless, in
//!   case an IDLE notice is lost) looks at the unseen mail.
//! - Only the `Message-ID`, `In-Reply-To` and `References` headers of
//!   unseen mail are read first. A message that names none of our ids
//!   (`<dir_…@domain>` of an email we sent, `<conv_…@domain>` of a
//!   conversation's thread) is someone else's mail: left unread and
//!   untouched, and remembered so it is not read again.
//! - A reply is fetched whole (`BODY.PEEK`, so reading does not mark it),
//!   its own words kept (quoted text and signature stripped), reported, and
//!   only then marked `\Seen`. Nothing is ever deleted or moved. A report
//!   that did not reach the server leaves the mail unseen: it is reported
//!   on the next round, and the server dedupes by `Message-ID`.
//!
//! TLS: the same pinned verifier as SMTP ([`crate::pin`]), trusting exactly
//! the certificates of `--imap-ca-file`, else SMTP's pins: Bridge's
//! certificate is CA-flagged, which a root store refuses as an end-entity
//! certificate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use futures::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::api::{ApiError, Client, InboundReport};

/// How the IMAP connection is protected.
#[derive(Debug, Clone)]
pub enum ImapTls {
    /// STARTTLS, trusting exactly these certificates (SHA-256 of their DER).
    Starttls {
        /// The pinned certificates (`--imap-ca-file`, else SMTP's pins).
        trust: crate::pin::Trust,
    },
    /// No TLS: only for a loopback host, behind a loudly named flag.
    Plain,
}

/// The reply watch's settings, resolved by [`crate::config::Args::validate`].
#[derive(Clone)]
pub struct ImapConfig {
    /// IMAP host.
    pub host: String,
    /// IMAP port (Bridge: 1143).
    pub port: u16,
    /// Protection.
    pub tls: ImapTls,
    /// User name (default: the SMTP one).
    pub username: String,
    /// Password (default: the SMTP one).
    pub password: String,
    /// The mailbox replies arrive in.
    pub mailbox: String,
    /// Longest wait between looks at the mailbox, IDLE or not.
    pub poll: Duration,
    /// The domain of our `Message-ID`s: only ids in it are ours.
    pub message_id_domain: String,
    /// Connect and command timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

/// Failures of one IMAP session.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// Network or TLS trouble.
    #[error("IMAP connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server said no, or spoke nonsense.
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    /// The server does not offer STARTTLS, or refused it.
    #[error("IMAP STARTTLS: {0}")]
    Starttls(String),
    /// A step took longer than the timeout.
    #[error("IMAP: no answer within {0:?}")]
    Timeout(Duration),
    /// The FleetPrompt server refused the connector token.
    #[error("the server refused the connector token")]
    Unauthorized,
}

/// A byte stream, plain or TLS, as one type for the IMAP client.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

async fn timed<T, E: Into<ImapError>>(
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(limit)),
    }
}

/// Connects, upgrades with STARTTLS, logs in and selects the mailbox;
/// returns the session and the mailbox's UIDVALIDITY.
pub async fn connect(config: &ImapConfig) -> Result<(Session, Option<u32>), ImapError> {
    let t = config.timeout;
    let tcp = timed(
        t,
        tokio::net::TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await?;
    let mut client = async_imap::Client::new(tcp);
    // The greeting.
    let greeting = timed(t, client.read_response()).await?;
    if greeting.is_none() {
        return Err(ImapError::Starttls(
            "the server closed the connection".into(),
        ));
    }
    let stream: Box<dyn Io> = match &config.tls {
        ImapTls::Starttls { trust } => {
            timed(t, client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|e| ImapError::Starttls(e.to_string()))?;
            let tcp = client.into_inner();
            let tls =
                crate::pin::client_config(trust).map_err(|e| ImapError::Starttls(e.to_string()))?;
            let name = ServerName::try_from(config.host.clone())
                .map_err(|e| ImapError::Starttls(format!("bad host name: {e}")))?;
            let connect = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp);
            let secured = match tokio::time::timeout(t, connect).await {
                Ok(Ok(s)) => s,
                // A pin mismatch in words, naming both fingerprints.
                Ok(Err(e)) => return Err(ImapError::Starttls(crate::pin::explain(&e))),
                Err(_) => return Err(ImapError::Timeout(t)),
            };
            Box::new(secured)
        }
        ImapTls::Plain => Box::new(client.into_inner()),
    };
    let client = async_imap::Client::new(stream);
    let mut session = timed(t, async {
        client
            .login(&config.username, &config.password)
            .await
            .map_err(|(e, _)| e)
    })
    .await?;
    let mailbox = timed(t, session.select(&config.mailbox)).await?;
    Ok((session, mailbox.uid_validity))
}

/// One message's identity headers, as the watch first reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Its `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// The ids of ours it names (`dir_…`, `conv_…`), `In-Reply-To` first.
    pub ours: Vec<String>,
}

/// Every `<id>` in a header value.
fn angle_ids(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        out.push(rest[open + 1..open + close].trim());
        rest = &rest[open + close + 1..];
    }
    out
}

/// Reads the identity headers of a raw header block (folded lines
/// allowed), keeping only the ids of `domain` that we make.
pub fn parse_headers(raw: &str, domain: &str) -> Headers {
    // Unfold: a line starting with whitespace continues the previous one.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in raw.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut h = Headers::default();
    let suffix = format!("@{}", domain.to_ascii_lowercase());
    for wanted in ["in-reply-to", "references"] {
        for (_, v) in fields.iter().filter(|(k, _)| k == wanted) {
            for id in angle_ids(v) {
                let lower = id.to_ascii_lowercase();
                let Some(local) = lower.strip_suffix(&suffix) else {
                    continue;
                };
                let ours = (local.starts_with("dir_") || local.starts_with("conv_"))
                    && local[local.find('_').unwrap_or(0) + 1..]
                        .chars()
                        .all(|c| c.is_ascii_hexdigit());
                if ours && !h.ours.iter().any(|o| o == local) {
                    h.ours.push(local.to_owned());
                }
            }
        }
    }
    h.message_id = fields
        .iter()
        .find(|(k, _)| k == "message-id")
        .and_then(|(_, v)| angle_ids(v).first().map(|s| s.to_string()))
        .filter(|s| !s.is_empty());
    h
}

/// The reply's own words: everything above the quoted original (a line
/// `On … wrote:`, `-----Original Message-----`, or the first `>` block)
/// and above the signature (`-- `, and the mail apps' "Sent from" lines).
pub fn strip_reply(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let t = line.trim();
        // Gmail/Proton/Apple write the attribution on one or two lines
        // ("On Tue, … <x@y>\n wrote:").
        let attribution = t.ends_with("wrote:")
            || (t.starts_with("On ")
                && lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim().ends_with("wrote:")));
        if attribution
            || t.starts_with('>')
            || t == "-----Original Message-----"
            || t.starts_with("------- Original Message -------")
            || line == "-- "
            || t == "--"
            || t == "__"
            || t.starts_with("Sent with Proton Mail")
            || t.starts_with("Sent from my ")
        {
            break;
        }
        kept.push(line);
        i += 1;
    }
    kept.join("\n").trim().to_owned()
}

/// A reply, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its `Message-ID`.
    pub message_id: String,
    /// The sender's address.
    pub from: String,
    /// Its own words.
    pub text: String,
}

/// Reads a whole message: sender, `Message-ID` and its own words.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())?
        .to_owned();
    let message_id = msg.message_id()?.to_owned();
    let body = msg.body_text(0)?;
    Some(Reply {
        message_id,
        from,
        text: strip_reply(&body),
    })
}

/// What one look at the mailbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Replies reported and marked seen.
    pub reported: usize,
    /// Unseen messages that are not replies to us (left untouched).
    pub ignored: usize,
}

/// Watches the mailbox until `shutdown`, reconnecting with backoff.
/// Returns `Err` only when the server refuses the connector token.
pub async fn watch(
    config: ImapConfig,
    api: Client,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ImapError> {
    // UIDs of mail that is not ours: never read twice. They hold only for
    // one UIDVALIDITY (a rebuilt mailbox numbers its mail afresh).
    let mut not_ours = NotOurs::default();
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let result = tokio::select! {
            r = session_loop(&config, &api, &mut not_ours, &mut backoff) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        match result {
            Err(ImapError::Unauthorized) => return Err(ImapError::Unauthorized),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, host = %config.host, "IMAP watch failed; reconnecting");
            }
            Ok(()) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// The UIDs of unseen mail that is not ours, for one UIDVALIDITY.
#[derive(Debug, Default)]
struct NotOurs {
    validity: Option<u32>,
    uids: HashSet<u32>,
}

async fn session_loop(
    config: &ImapConfig,
    api: &Client,
    not_ours: &mut NotOurs,
    backoff: &mut Duration,
) -> Result<(), ImapError> {
    let (mut session, validity) = connect(config).await?;
    if not_ours.validity != validity {
        not_ours.validity = validity;
        not_ours.uids.clear();
    }
    let not_ours = &mut not_ours.uids;
    let idle = timed(config.timeout, session.capabilities())
        .await?
        .has_str("IDLE");
    tracing::info!(host = %config.host, mailbox = %config.mailbox, idle, "watching the mailbox for replies");
    *backoff = Duration::from_secs(1);
    loop {
        let round = look(config, api, &mut session, not_ours).await?;
        if round.reported + round.ignored > 0 {
            tracing::info!(
                replies = round.reported,
                not_ours = round.ignored,
                "looked at the mailbox"
            );
        }
        // Drop the notices the look produced: the next look sees all.
        while session.unsolicited_responses.try_recv().is_ok() {}
        if idle {
            let mut handle = session.idle();
            timed(config.timeout, handle.init()).await?;
            let (wait, _stop) = handle.wait_with_timeout(config.poll);
            match wait.await? {
                IdleResponse::NewData(_) | IdleResponse::Timeout => {}
                IdleResponse::ManualInterrupt => {}
            }
            session = timed(config.timeout, handle.done()).await?;
        } else {
            tokio::time::sleep(config.poll).await;
            timed(config.timeout, session.noop()).await?;
        }
    }
}

/// Looks at the unseen mail once: reports replies to us, marks them seen.
async fn look(
    config: &ImapConfig,
    api: &Client,
    session: &mut Session,
    not_ours: &mut HashSet<u32>,
) -> Result<Round, ImapError> {
    let t = config.timeout;
    let mut unseen: Vec<u32> = timed(t, session.uid_search("UNSEEN"))
        .await?
        .into_iter()
        .filter(|u| !not_ours.contains(u))
        .collect();
    unseen.sort_unstable();
    let mut round = Round::default();
    for chunk in unseen.chunks(50) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let heads: Vec<(u32, Headers)> = timed(t, async {
            let fetched: Vec<_> = session
                .uid_fetch(
                    &set,
                    "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])",
                )
                .await?
                .try_collect()
                .await?;
            Ok::<_, async_imap::error::Error>(
                fetched
                    .iter()
                    .filter_map(|f| {
                        let raw = f.header().or_else(|| f.body())?;
                        Some((
                            f.uid?,
                            parse_headers(&String::from_utf8_lossy(raw), &config.message_id_domain),
                        ))
                    })
                    .collect(),
            )
        })
        .await?;
        for (uid, h) in heads {
            if h.ours.is_empty() {
                not_ours.insert(uid);
                round.ignored += 1;
                continue;
            }
            let raw: Option<Vec<u8>> = timed(t, async {
                let fetched: Vec<_> = session
                    .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await?;
                Ok::<_, async_imap::error::Error>(
                    fetched.iter().find_map(|f| f.body().map(<[u8]>::to_vec)),
                )
            })
            .await?;
            let Some(reply) = raw.as_deref().and_then(parse_reply) else {
                tracing::warn!(
                    uid,
                    "a reply to us that cannot be read (no sender, Message-ID or text); left unread"
                );
                not_ours.insert(uid);
                continue;
            };
            let report = InboundReport {
                message_id: reply.message_id.clone(),
                references: h.ours.clone(),
                from: reply.from.clone(),
                text: reply.text.clone(),
            };
            match api.inbound(&report).await {
                Ok(v) => {
                    tracing::info!(uid, message_id = %reply.message_id, recorded = %v["recorded"],
                        known_sender = %v["known_sender"], duplicate = %v["duplicate"], "reply reported");
                }
                Err(ApiError::Unauthorized) => return Err(ImapError::Unauthorized),
                Err(e @ ApiError::Status { .. }) => {
                    // Refused as malformed: retrying the same mail cannot help.
                    tracing::warn!(uid, error = %e, "the server refused the reply; marking it seen");
                }
                Err(e) => {
                    // Left unseen: reported on the next look.
                    tracing::warn!(uid, error = %e, "could not report the reply; will try again");
                    continue;
                }
            }
            let _: Vec<_> = timed(t, async {
                session
                    .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
            round.reported += 1;
        }
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_ids_in_our_domain_count() {
        let raw = "Message-ID: <CAF123@mail.gmail.com>\r\nIn-Reply-To:\r\n <dir_0193a1b2c3d4e5f60718293a4b5c6d7e@edge.fleetprompt>\r\nReferences: <conv_0193aa@edge.fleetprompt> <other@edge.fleetprompt>\r\n <dir_0193a1b2c3d4e5f60718293a4b5c6d7e@edge.fleetprompt> <dir_ff@elsewhere.example>\r\n";
        let h = parse_headers(raw, "edge.fleetprompt");
        assert_eq!(h.message_id.as_deref(), Some("CAF123@mail.gmail.com"));
        assert_eq!(
            h.ours,
            ["dir_0193a1b2c3d4e5f60718293a4b5c6d7e", "conv_0193aa"]
        );
        assert!(
            parse_headers("Message-ID: <a@b>\r\n", "edge.fleetprompt")
                .ours
                .is_empty()
        );
    }

    #[test]
    fn quotes_and_signatures_are_stripped() {
        let t = "Thanks, we shipped it today.\nTracking: 123\n\nOn Tue, 1 Dec 2026 at 10:00, Acme <support@acme.example> wrote:\n> A visitor is waiting\n> Open the conversation";
        assert_eq!(
            strip_reply(t),
            "Thanks, we shipped it today.\nTracking: 123"
        );
        let t = "Yes.\n\n-- \nAna, Acme support\n+1 555";
        assert_eq!(strip_reply(t), "Yes.");
        let t = "Sure.\n\nSent with Proton Mail secure email.\n\n------- Original Message -------\nOn Tuesday…";
        assert_eq!(strip_reply(t), "Sure.");
        let t = "On it.\n\nOn Tue, Dec 1, 2026 at 10:00 AM Acme Support\n<support@acme.example> wrote:\n> quoted";
        assert_eq!(strip_reply(t), "On it.");
    }

    #[test]
    fn a_whole_reply_is_read() {
        let raw = b"From: Team <team@example.com>\r\nTo: support@acme.example\r\nMessage-ID: <r1@example.com>\r\nIn-Reply-To: <dir_01@edge.fleetprompt>\r\nSubject: Re: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nYour order ships tomorrow =E2=80=94 sorry!\r\n\r\nOn Tue, someone wrote:\r\n> hello\r\n";
        let r = parse_reply(raw).unwrap();
        assert_eq!(r.from, "team@example.com");
        assert_eq!(r.message_id, "r1@example.com");
        assert_eq!(r.text, "Your order ships tomorrow \u{2014} sorry!");
    }
}
