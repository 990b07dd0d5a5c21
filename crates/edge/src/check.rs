//! `fleetprompt-edge check`: the first thing to run after installing. It
//! tries what a delivery needs, once, and says in a sentence what is wrong:
//! the SMTP server (connect, STARTTLS with the pinned certificate, AUTH) and
//! the FleetPrompt server (a heartbeat with the token). It prints to stdout;
//! the caller exits 0 when every step passed, else 1.

use std::io::Write;

use crate::api::{ApiError, Client};
use crate::config::{Config, Security};
use crate::smtp::Smtp;

/// Runs every step, printing one line per step to `out`. Returns whether
/// all passed.
pub async fn check(config: &Config, out: &mut impl Write) -> bool {
    let mut ok = true;
    let addr = format!("{}:{}", config.smtp_host, config.smtp_port);
    match config.smtp_security {
        Security::Starttls => {
            let _ = writeln!(
                out,
                "SMTP {addr}: STARTTLS, trusting {}",
                config.smtp_trust.describe()
            );
        }
        Security::PlainTextInsecureLoopbackOnly => {
            let _ = writeln!(out, "SMTP {addr}: plain text (insecure, loopback only)");
        }
    }
    match Smtp::new(config) {
        Err(e) => {
            ok = false;
            let _ = writeln!(out, "FAIL: cannot set up TLS: {e}");
        }
        Ok(smtp) => match smtp.connect().await {
            Ok(session) => {
                if let Some(f) = &session.certificate_sha256 {
                    let _ = writeln!(out, "ok: the server's certificate (SHA-256 {f}) is trusted");
                }
                let _ = writeln!(
                    out,
                    "{}",
                    if smtp.has_credentials() {
                        "ok: the SMTP login was accepted"
                    } else {
                        "ok: connected (no --smtp-username: no login tried)"
                    }
                );
                session.quit().await;
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "FAIL: {e}");
            }
        },
    }
    match Client::new(config) {
        Err(e) => {
            ok = false;
            let _ = writeln!(out, "FAIL: cannot set up HTTP: {e}");
        }
        Ok(client) => match client.heartbeat().await {
            Ok(v) => {
                let _ = writeln!(
                    out,
                    "ok: the FleetPrompt server {} knows this connector ({})",
                    config.server_url,
                    v["connector_id"].as_str().unwrap_or("?")
                );
            }
            Err(e @ ApiError::Unauthorized) => {
                ok = false;
                let _ = writeln!(
                    out,
                    "FAIL: {e}: create a token with `fleetprompt edge-connector create`"
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(
                    out,
                    "FAIL: the FleetPrompt server {}: {e}",
                    config.server_url
                );
            }
        },
    }
    let _ = writeln!(
        out,
        "{}",
        if ok {
            "All checks passed: this connector can deliver email."
        } else {
            "Some checks failed: fix the FAIL lines above, then run `fleetprompt-edge check` again."
        }
    );
    ok
}
