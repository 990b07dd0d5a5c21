//! The demo of the embedded setup: `serve` creates a demo tenant and site on
//! first start and prints where the demo chat is.

use std::io::Write;
use std::net::SocketAddr;

use fleetprompt_engine::Engine;

use crate::settings::Common;

/// Creates (or re-points at this address) the demo site, keeps the demo
/// tenant's admin token in `<data dir>/demo-admin-token` (mode 0600, never
/// logged), and prints the demo URL as the second stdout line.
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
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                match opts
                    .open(&path)
                    .and_then(|mut f| f.write_all(token.as_bytes()))
                {
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
            println!("FleetPrompt demo: http://{host}/demo");
        }
        Err(e) => tracing::warn!(error = %e, "setting up the demo failed; /demo is unavailable"),
    }
}
