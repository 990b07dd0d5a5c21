//! The demo of the embedded setup: `serve` creates a demo tenant and site on
//! first start and prints where the demo chat is.

use std::io::Write;
use std::net::SocketAddr;

use fleetprompt_engine::Engine;

use crate::settings::Common;

/// The demo console member's email.
pub const DEMO_MEMBER: &str = "demo@example.com";

/// Writes a secret to a file of the data directory, readable by its owner
/// only (mode 0600), never logged.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
}

/// Adds the demo tenant's console member (an admin) if it has none, and
/// writes its email and one-time password to `<data dir>/demo-console-login`.
async fn ensure_member(engine: &Engine, common: &Common) {
    use fleetprompt_engine::access;
    let db = engine.db();
    let tenant =
        match fleetprompt_store::tenant::find_by_slug(db, fleetprompt_webchat::demo::DEMO_TENANT)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the demo tenant; no demo console member");
                return;
            }
        };
    match access::find_member(engine, tenant.id, DEMO_MEMBER).await {
        Ok(_) => return,
        Err(fleetprompt_engine::EngineError::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the demo console member");
            return;
        }
    }
    let origin = fleetprompt_core::Origin::System {
        component: "demo".into(),
    };
    let added = access::add_member(
        engine,
        tenant.id,
        DEMO_MEMBER,
        Some("Demo admin"),
        fleetprompt_core::member::Role::Admin,
        false,
        &origin,
    )
    .await;
    match added {
        Ok((_, access::FirstSecret::Password(password))) => {
            let path = common.data_dir.join("demo-console-login");
            match write_private(
                &path,
                &format!("email: {DEMO_MEMBER}\npassword: {password}\n"),
            ) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "demo console member added; its sign-in is in this file")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the demo console sign-in")
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "adding the demo console member failed"),
    }
}

/// Creates (or re-points at this address) the demo site, keeps the demo
/// tenant's admin token in `<data dir>/demo-admin-token` (mode 0600, never
/// logged) and a console member's sign-in in `<data dir>/demo-console-login`,
/// and prints the demo URL as the second stdout line and the console's
/// as the third.
pub async fn setup(engine: &Engine, common: &Common, local: SocketAddr) {
    let mut origins = vec![format!("http://{local}")];
    if local.ip().is_loopback() || local.ip().is_unspecified() {
        origins.push(format!("http://localhost:{}", local.port()));
        origins.push(format!("http://127.0.0.1:{}", local.port()));
    }
    match fleetprompt_webchat::demo::ensure(engine, &origins).await {
        Ok(demo) => {
            if let Some(token) = demo.admin_token {
                let path = common.data_dir.join("demo-admin-token");
                match write_private(&path, &token) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "demo tenant created; its admin token is in this file")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write the demo admin token")
                    }
                }
            }
            let host = if local.ip().is_unspecified() {
                format!("localhost:{}", local.port())
            } else {
                local.to_string()
            };
            ensure_member(engine, common).await;
            println!("FleetPrompt demo: http://{host}/demo");
            println!("FleetPrompt console: http://{host}/console");
        }
        Err(e) => tracing::warn!(error = %e, "setting up the demo failed; /demo is unavailable"),
    }
}
