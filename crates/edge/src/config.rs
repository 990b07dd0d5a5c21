//! Settings: flags, each with a `FLEETPROMPT_EDGE_*` environment variable,
//! checked once at start by [`Args::validate`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use lettre::message::Mailbox;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Security {
    /// Upgrade with STARTTLS, refusing a server that does not offer it
    /// (Proton Mail Bridge's default).
    Starttls,
    /// No TLS: allowed only for a loopback host, where nothing crosses a
    /// network. Named loudly so that nobody picks it by accident; the old
    /// name `plain` still works, with a warning.
    #[value(name = "plain-text-insecure-loopback-only", alias = "plain")]
    PlainTextInsecureLoopbackOnly,
}

/// What the binary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Mode {
    /// Deliver tasks until stopped (the default).
    #[default]
    Run,
    /// Try the SMTP server (STARTTLS, the pinned certificate, AUTH) and the
    /// FleetPrompt server (the token) once, say what is wrong, exit 0 or 1.
    Check,
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fleetprompt-edge",
    version,
    about = "FleetPrompt Edge Connector: delivers a tenant's email tasks through its own SMTP server (Proton Mail Bridge)"
)]
pub struct Args {
    /// `run` (the default) or `check`: try the SMTP and FleetPrompt servers
    /// once and say what is wrong.
    #[arg(value_enum, default_value = "run")]
    pub mode: Mode,
    /// The FleetPrompt server's base URL, e.g. https://fleetprompt.example.com.
    #[arg(long, env = "FLEETPROMPT_EDGE_SERVER_URL")]
    pub server_url: String,
    /// A file holding the connector token (`fpe_…`), when it is not in
    /// FLEETPROMPT_EDGE_TOKEN. Never a flag: flags show up in `ps`.
    #[arg(long, env = "FLEETPROMPT_EDGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// SMTP server host.
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_HOST", default_value = "127.0.0.1")]
    pub smtp_host: String,
    /// SMTP server port (Proton Mail Bridge listens on 1025).
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_PORT", default_value_t = 1025)]
    pub smtp_port: u16,
    /// STARTTLS, or plain-text-insecure-loopback-only for a loopback host.
    #[arg(
        long,
        env = "FLEETPROMPT_EDGE_SMTP_SECURITY",
        value_enum,
        default_value = "starttls"
    )]
    pub smtp_security: Security,
    /// A PEM file with the SMTP server's own certificate, e.g. the one
    /// Proton Mail Bridge exports: the server must present exactly this
    /// certificate (it is pinned; it may be self-signed and CA-flagged).
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the SMTP server's certificate (hex,
    /// colons allowed): the server must present exactly this certificate.
    /// Repeat, or separate with commas, to accept several (a renewal).
    #[arg(
        long,
        env = "FLEETPROMPT_EDGE_SMTP_CERT_SHA256",
        value_delimiter = ',',
        num_args = 1
    )]
    pub smtp_cert_sha256: Vec<String>,
    /// SMTP user name (Proton Mail Bridge shows it per account).
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// A file holding the SMTP password, when it is not in
    /// FLEETPROMPT_EDGE_SMTP_PASSWORD.
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// The sender, e.g. "Acme Support <support@acme.example>".
    #[arg(long, env = "FLEETPROMPT_EDGE_FROM")]
    pub from: String,
    /// The recipient of tasks that name none (the team's mailbox).
    #[arg(long, env = "FLEETPROMPT_EDGE_TO")]
    pub to: Option<String>,
    /// The domain of the deterministic `Message-ID` (`<dir_…@domain>`).
    #[arg(
        long,
        env = "FLEETPROMPT_EDGE_MESSAGE_ID_DOMAIN",
        default_value = "edge.fleetprompt"
    )]
    pub message_id_domain: String,
    /// Seconds between heartbeats.
    #[arg(long, env = "FLEETPROMPT_EDGE_HEARTBEAT_SECS", default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// How long one claim waits for a task, in milliseconds (long poll).
    #[arg(long, env = "FLEETPROMPT_EDGE_WAIT_MS", default_value_t = 20_000)]
    pub wait_ms: u64,
    /// Most tasks claimed at once.
    #[arg(long, env = "FLEETPROMPT_EDGE_BATCH", default_value_t = 5)]
    pub batch: i64,
    /// How long a claimed task is ours before the server gives it to
    /// another attempt, in seconds: longer than a slow SMTP send.
    #[arg(long, env = "FLEETPROMPT_EDGE_LEASE_SECS", default_value_t = 120)]
    pub lease_secs: u64,
    /// SMTP connect and command timeout, in seconds.
    #[arg(long, env = "FLEETPROMPT_EDGE_SMTP_TIMEOUT_SECS", default_value_t = 30)]
    pub smtp_timeout_secs: u64,
    /// Where the journal lives (a SQLite file remembering each email sent
    /// and each result not yet reported). Default: `$STATE_DIRECTORY`
    /// (systemd's `StateDirectory=`), else ~/.local/state/fleetprompt-edge.
    #[arg(long, env = "FLEETPROMPT_EDGE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FLEETPROMPT_EDGE_LOG_JSON")]
    pub log_json: bool,
    /// The reply watch's IMAP settings.
    #[command(flatten)]
    pub imap: ImapArgs,
}

/// Flags of the reply watch (IMAP); without `--imap-host` replies are not
/// watched.
#[derive(Debug, Clone, clap::Args)]
pub struct ImapArgs {
    /// IMAP server host whose mailbox receives replies to our emails
    /// (Proton Mail Bridge: 127.0.0.1).
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_HOST")]
    pub imap_host: Option<String>,
    /// IMAP port (Proton Mail Bridge listens on 1143, with STARTTLS).
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_PORT", default_value_t = 1143)]
    pub imap_port: u16,
    /// The PEM certificate the IMAP server must present (pinned by its
    /// SHA-256); default: --smtp-ca-file (Bridge uses one certificate for both).
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_CA_FILE")]
    pub imap_ca_file: Option<PathBuf>,
    /// Speak IMAP without TLS. Passwords then cross in the clear: allowed
    /// only for a loopback host.
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_INSECURE_PLAINTEXT_LOOPBACK")]
    pub imap_insecure_plaintext_loopback: bool,
    /// IMAP user name; default: --smtp-username.
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_USERNAME")]
    pub imap_username: Option<String>,
    /// A file holding the IMAP password, when it is not in
    /// FLEETPROMPT_EDGE_IMAP_PASSWORD; default: the SMTP password.
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_PASSWORD_FILE")]
    pub imap_password_file: Option<PathBuf>,
    /// The mailbox replies arrive in.
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_MAILBOX", default_value = "INBOX")]
    pub imap_mailbox: String,
    /// Longest wait between two looks at the mailbox, in seconds: the IDLE
    /// renewal, or the poll interval of a server without IDLE.
    #[arg(long, env = "FLEETPROMPT_EDGE_IMAP_POLL_SECS", default_value_t = 60)]
    pub imap_poll_secs: u64,
}

impl ImapArgs {
    /// The reply watch's settings, or `None` without `--imap-host`.
    /// Credentials and the pinned certificate default to SMTP's.
    pub fn resolve(
        &self,
        env_password: Option<String>,
        smtp_credentials: Option<&(String, String)>,
        smtp_trust: &crate::pin::Trust,
        message_id_domain: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<crate::imap::ImapConfig>> {
        let Some(host) = self.imap_host.clone().filter(|h| !h.trim().is_empty()) else {
            return Ok(None);
        };
        let tls = if self.imap_insecure_plaintext_loopback {
            if !is_loopback(&host) {
                anyhow::bail!(
                    "--imap-insecure-plaintext-loopback is allowed only for a loopback host, not {host:?}"
                );
            }
            crate::imap::ImapTls::Plain
        } else {
            let trust = match &self.imap_ca_file {
                Some(p) => {
                    let what = format!("--imap-ca-file {}", p.display());
                    let pem =
                        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {what}: {e}"))?;
                    crate::pin::Trust::Pinned {
                        pins: crate::pin::pins_from_pem(&pem, &what)?,
                        source: what,
                    }
                }
                None => match smtp_trust {
                    crate::pin::Trust::Pinned { .. } => smtp_trust.clone(),
                    crate::pin::Trust::Platform => anyhow::bail!(
                        "--imap-host needs the certificate to pin: --imap-ca-file, or --smtp-ca-file / --smtp-cert-sha256 when the server is the same (Proton Mail Bridge)"
                    ),
                },
            };
            crate::imap::ImapTls::Starttls { trust }
        };
        let password = match (env_password, &self.imap_password_file) {
            (Some(p), _) => Some(p),
            (None, Some(path)) => Some(read_secret(path, "IMAP password")?),
            (None, None) => smtp_credentials.map(|(_, p)| p.clone()),
        };
        let username = self
            .imap_username
            .clone()
            .or_else(|| smtp_credentials.map(|(u, _)| u.clone()));
        let (Some(username), Some(password)) = (username, password) else {
            anyhow::bail!(
                "--imap-host needs a user name and password: --imap-username and FLEETPROMPT_EDGE_IMAP_PASSWORD, or the SMTP ones"
            );
        };
        if self.imap_poll_secs == 0 || self.imap_poll_secs > 1500 {
            // IDLE must be renewed within 29 minutes (RFC 2177).
            anyhow::bail!("--imap-poll-secs must be 1 to 1500");
        }
        Ok(Some(crate::imap::ImapConfig {
            host,
            port: self.imap_port,
            tls,
            username,
            password,
            mailbox: self.imap_mailbox.clone(),
            poll: Duration::from_secs(self.imap_poll_secs),
            message_id_domain: message_id_domain.to_owned(),
            timeout,
        }))
    }
}

/// Settings checked and resolved: secrets read, addresses parsed.
#[derive(Clone)]
pub struct Config {
    /// The server's base URL, without a trailing slash.
    pub server_url: String,
    /// The connector token.
    pub token: String,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// SMTP protection.
    pub smtp_security: Security,
    /// What STARTTLS trusts: pinned certificates, or the platform's roots.
    pub smtp_trust: crate::pin::Trust,
    /// SMTP user name and password.
    pub smtp_credentials: Option<(String, String)>,
    /// The sender.
    pub from: Mailbox,
    /// The default recipient.
    pub to: Option<Mailbox>,
    /// Domain of `Message-ID`s.
    pub message_id_domain: String,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// One claim's long poll.
    pub wait: Duration,
    /// Tasks per claim.
    pub batch: i64,
    /// Lease asked for each task.
    pub lease: Duration,
    /// SMTP timeout.
    pub smtp_timeout: Duration,
    /// The journal's directory.
    pub state_dir: PathBuf,
    /// The reply watch (IMAP), when `--imap-host` is set.
    pub imap: Option<crate::imap::ImapConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the SMTP password.
        f.debug_struct("Config")
            .field("server_url", &self.server_url)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_security", &self.smtp_security)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// Whether `host` names this machine: the only place plain SMTP is allowed.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the {what} file {}: {e}", path.display()))?;
    Ok(s.trim().to_owned())
}

impl Args {
    /// Checks the settings and reads the secrets: the token from
    /// `FLEETPROMPT_EDGE_TOKEN` or `--token-file`, the SMTP password from
    /// `FLEETPROMPT_EDGE_SMTP_PASSWORD` or `--smtp-password-file`.
    pub fn validate(
        self,
        env_token: Option<String>,
        env_password: Option<String>,
    ) -> anyhow::Result<Config> {
        let url = reqwest::Url::parse(&self.server_url)
            .map_err(|e| anyhow::anyhow!("--server-url {:?} is not a URL: {e}", self.server_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--server-url must be an http or https URL");
        }
        if url.scheme() == "http" && !url.host_str().is_some_and(is_loopback) {
            // The token travels in every request.
            anyhow::bail!("--server-url must be https unless the server is on this machine");
        }
        let token = match (env_token.filter(|t| !t.trim().is_empty()), &self.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(path)) => read_secret(path, "token")?,
            (None, None) => anyhow::bail!(
                "no connector token: set FLEETPROMPT_EDGE_TOKEN or --token-file (create one with `fleetprompt edge-connector create`)"
            ),
        };
        if !token.starts_with("fpe_") {
            anyhow::bail!("the connector token must start with fpe_ (an admin token will not do)");
        }
        if self.smtp_security == Security::PlainTextInsecureLoopbackOnly
            && !is_loopback(&self.smtp_host)
        {
            anyhow::bail!(
                "--smtp-security plain-text-insecure-loopback-only is allowed only for a loopback host, not {:?}: use starttls",
                self.smtp_host
            );
        }
        let smtp_trust = self.trust()?;
        let password = match (env_password, &self.smtp_password_file) {
            (Some(p), _) => Some(p),
            (None, Some(path)) => Some(read_secret(path, "SMTP password")?),
            (None, None) => None,
        };
        let smtp_credentials = match (self.smtp_username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => anyhow::bail!("--smtp-username and the SMTP password go together"),
        };
        let state_dir = self
            .state_dir
            .clone()
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".local/state/fleetprompt-edge"))
            })
            .ok_or_else(|| anyhow::anyhow!("no --state-dir, and no $HOME to default to"))?;
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("--from {:?} is not an address: {e}", self.from))?;
        let to = self
            .to
            .as_deref()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| anyhow::anyhow!("--to {t:?} is not an address: {e}"))
            })
            .transpose()?;
        if !(1..=50).contains(&self.batch) {
            anyhow::bail!("--batch must be 1 to 50");
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs > 120 {
            // The silent-connector alert fires after 5 minutes.
            anyhow::bail!("--heartbeat-secs must be 1 to 120");
        }
        if self.message_id_domain.is_empty()
            || !self
                .message_id_domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            anyhow::bail!("--message-id-domain must be a domain name");
        }
        let imap = self.imap.resolve(
            std::env::var("FLEETPROMPT_EDGE_IMAP_PASSWORD").ok(),
            smtp_credentials.as_ref(),
            &smtp_trust,
            &self.message_id_domain,
            Duration::from_secs(self.smtp_timeout_secs.max(1)),
        )?;
        Ok(Config {
            imap,
            server_url: self.server_url.trim_end_matches('/').to_owned(),
            token,
            smtp_host: self.smtp_host,
            smtp_port: self.smtp_port,
            smtp_security: self.smtp_security,
            smtp_trust,
            smtp_credentials,
            from,
            to,
            message_id_domain: self.message_id_domain,
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            wait: Duration::from_millis(self.wait_ms.min(25_000)),
            batch: self.batch,
            lease: Duration::from_secs(self.lease_secs.clamp(10, 600)),
            smtp_timeout: Duration::from_secs(self.smtp_timeout_secs.max(1)),
            state_dir,
        })
    }

    /// The pins from `--smtp-cert-sha256` and `--smtp-ca-file`, together.
    fn trust(&self) -> anyhow::Result<crate::pin::Trust> {
        let mut pins = Vec::new();
        let mut sources = Vec::new();
        for f in self
            .smtp_cert_sha256
            .iter()
            .filter(|f| !f.trim().is_empty())
        {
            pins.push(
                crate::pin::parse_fingerprint(f)
                    .map_err(|e| anyhow::anyhow!("--smtp-cert-sha256: {e}"))?,
            );
        }
        if !pins.is_empty() {
            sources.push("--smtp-cert-sha256".to_owned());
        }
        if let Some(p) = &self.smtp_ca_file {
            let what = format!("--smtp-ca-file {}", p.display());
            let pem = std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {what}: {e}"))?;
            pins.extend(crate::pin::pins_from_pem(&pem, &what)?);
            sources.push(what);
        }
        Ok(if pins.is_empty() {
            crate::pin::Trust::Platform
        } else {
            crate::pin::Trust::Pinned {
                pins,
                source: sources.join(" and "),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_defaults_to_the_smtp_login_and_certificate_and_plain_only_on_loopback() {
        let token = || Some("fpe_edge_x.y".to_owned());
        let dir = std::env::temp_dir().join(format!("fp-edge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("bridge.pem");
        let cert = rcgen_free_pem();
        std::fs::write(&pem, cert).unwrap();
        let pem = pem.display().to_string();
        // Without --imap-host there is no reply watch.
        let c = args(&[]).validate(token(), None).unwrap();
        assert!(c.imap.is_none());
        let c = args(&[
            "--imap-host",
            "127.0.0.1",
            "--smtp-ca-file",
            &pem,
            "--smtp-username",
            "support@acme.example",
        ])
        .validate(token(), Some("bridge-pw".into()))
        .unwrap();
        let imap = c.imap.expect("imap");
        assert_eq!(imap.port, 1143);
        assert_eq!(imap.username, "support@acme.example");
        assert_eq!(imap.password, "bridge-pw");
        assert!(
            matches!(imap.tls, crate::imap::ImapTls::Starttls { trust: crate::pin::Trust::Pinned { ref pins, .. } } if pins.len() == 1)
        );
        assert!(!format!("{imap:?}").contains("bridge-pw"));
        // No certificate to pin, no login: refused with a reason.
        let err = args(&["--imap-host", "127.0.0.1", "--smtp-username", "u"])
            .validate(token(), Some("pw".into()))
            .unwrap_err();
        assert!(err.to_string().contains("pin"), "{err}");
        let err = args(&["--imap-host", "127.0.0.1", "--smtp-ca-file", &pem])
            .validate(token(), None)
            .unwrap_err();
        assert!(err.to_string().contains("user name"), "{err}");
        // Plaintext only for loopback.
        let err = args(&[
            "--imap-host",
            "mail.example.com",
            "--imap-insecure-plaintext-loopback",
        ])
        .validate(token(), None)
        .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    /// A PEM block (any bytes will do: only their fingerprint is kept).
    fn rcgen_free_pem() -> &'static str {
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n"
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec![
            "fleetprompt-edge",
            "--server-url",
            "https://fp.example.com",
            "--from",
            "Support <support@acme.example>",
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn loopback_is_recognised() {
        for h in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "mail.example.com", "0.0.0.0"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn plain_smtp_only_on_loopback() {
        let token = || Some("fpe_edge_x.y".to_owned());
        assert!(
            args(&["--smtp-security", "plain-text-insecure-loopback-only"])
                .validate(token(), None)
                .is_ok()
        );
        // The old name still parses.
        assert_eq!(
            args(&["--smtp-security", "plain"]).smtp_security,
            Security::PlainTextInsecureLoopbackOnly
        );
        let err = args(&[
            "--smtp-security",
            "plain",
            "--smtp-host",
            "mail.example.com",
        ])
        .validate(token(), None)
        .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(
            args(&["--smtp-host", "mail.example.com"])
                .validate(token(), None)
                .is_ok()
        );
    }

    #[test]
    fn tokens_must_be_connector_tokens_and_never_show_in_debug() {
        let err = args(&[]).validate(None, None).unwrap_err();
        assert!(err.to_string().contains("FLEETPROMPT_EDGE_TOKEN"), "{err}");
        let err = args(&[])
            .validate(Some("fpa_tok_x.y".into()), None)
            .unwrap_err();
        assert!(err.to_string().contains("fpe_"), "{err}");
        let c = args(&["--smtp-username", "u"])
            .validate(Some("fpe_edge_a.secret".into()), Some("pw".into()))
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("pw"),
            "{shown}"
        );
    }

    #[test]
    fn pins_come_from_fingerprints_and_pem_files_together() {
        let token = || Some("fpe_edge_x.y".to_owned());
        let c = args(&[]).validate(token(), None).unwrap();
        assert_eq!(c.smtp_trust, crate::pin::Trust::Platform);
        let a = "ab".repeat(32);
        let b = vec!["CD"; 32].join(":");
        let c = args(&["--smtp-cert-sha256", &format!("{a},{b}")])
            .validate(token(), None)
            .unwrap();
        let crate::pin::Trust::Pinned { pins, source } = c.smtp_trust else {
            panic!("not pinned");
        };
        assert_eq!(pins, [[0xab; 32], [0xcd; 32]]);
        assert_eq!(source, "--smtp-cert-sha256");
        let err = args(&["--smtp-cert-sha256", "abc"])
            .validate(token(), None)
            .unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        let missing = args(&["--smtp-ca-file", "/nonexistent/bridge.pem"])
            .validate(token(), None)
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/bridge.pem"),
            "{missing}"
        );
    }

    #[test]
    fn plain_http_only_to_a_local_server() {
        let mut a = args(&[]);
        a.server_url = "http://fp.example.com".into();
        assert!(a.validate(Some("fpe_x.y".into()), None).is_err());
        let mut a = args(&[]);
        a.server_url = "http://127.0.0.1:8080/".into();
        let c = a.validate(Some("fpe_x.y".into()), None).unwrap();
        assert_eq!(c.server_url, "http://127.0.0.1:8080");
    }
}
