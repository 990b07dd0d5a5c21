//! `fleetprompt`: one binary to serve, migrate, administer and benchmark.
//!
//! Data (URLs, JSON) goes to stdout; logs and diagnostics go to stderr.
//!
//! # Layout
//! - `main.rs`: the command line and dispatch.
//! - `settings.rs`: layered settings (defaults, then the configuration
//!   file, then `FLEETPROMPT_*` environment variables, then flags), the
//!   master key and logging.
//! - `config.rs`: the configuration file and `config show`.
//! - `serve.rs`: `serve` — the HTTP server and the directive worker.
//! - `bench.rs`: `bench engine` — directive throughput and start latency.
//! - `bench_console.rs`: `bench console` — the console's server time and live inbox latency.
//! - `demo.rs`: the demo tenant and site that `serve` sets up for `/demo`.
//! - `prune.rs`: `prune` — retention, deleting what has aged out.
//!
//! `user add|list|disable|reset-password` manages a tenant's members and
//! `tenant rotate-token` replaces its own admin token (docs/access.md).
//!
//! `edge-connector create|list|revoke` registers the Edge Connectors that
//! deliver email from next to a tenant's mail server (docs/edge-connector.md).

mod bench;
mod bench_console;
mod bench_escalation;
mod bench_ingest;
mod config;
mod demo;
mod prune;
mod serve;
mod settings;
mod workflows;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use fleetprompt_engine::package::{self, Package};
use settings::Common;

#[derive(Parser)]
#[command(
    name = "fleetprompt",
    version,
    about = "Durable, multi-tenant workflows from customer conversations"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server and/or the directive worker.
    Serve(serve::ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// The configuration in force.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's members (admins and agents who sign in).
    #[command(subcommand)]
    User(UserCommand),
    /// The package catalogue; install and uninstall packages for a tenant.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Website chat sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Edge Connectors (`fleetprompt-edge`, next to a tenant's mail server).
    #[command(subcommand)]
    EdgeConnector(EdgeConnectorCommand),
    /// Check and explain workflow rules.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// Re-route stored signals through today's rules (dedupe keys make it safe).
    Replay(workflows::ReplayArgs),
    /// Measure the engine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Delete finished directives, signals and ended conversations older than a cutoff.
    Prune(prune::PruneArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the settings `serve` would run with (given the same flags),
    /// each with where its value came from (default, file, env, flag);
    /// secrets redacted.
    Show(serve::ServeArgs),
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Send a test visitor message through the whole path and report the
    /// signal and each escalation's outcome (runs a worker meanwhile, so it
    /// works with or without a server).
    TestMessage {
        /// The site's id (`site_…`).
        site: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The workflows directory whose rules route the message.
        #[arg(
            long = "workflows",
            env = "FLEETPROMPT_WORKFLOWS_DIR",
            default_value = "./workflows"
        )]
        workflows: std::path::PathBuf,
        /// Seconds to wait for escalations to finish.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
    },
}

#[derive(Subcommand)]
enum EdgeConnectorCommand {
    /// Register a connector and print its token (shown once).
    Create {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// What to call it, e.g. the host it runs on.
        #[arg(long)]
        name: String,
        /// Print JSON: {"id", "tenant_id", "name", "token", …}.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's connectors and when each was last seen.
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a connector: its token stops working at once.
    Revoke {
        /// The connector's id (`edge_…`).
        id: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// The catalogue: every package, with the tenant's installation state
    /// (one line each: slug, state, version, name; `--json` for all of it).
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Print the catalogue as JSON, as `GET /admin/v1/packages` does.
        #[arg(long)]
        json: bool,
    },
    /// Install a package for a tenant, or install it again after an
    /// uninstall (its data comes back); installing twice is harmless.
    Install {
        /// The package (`fleetprompt package list` names them).
        package: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The installation's configuration, as a JSON object, checked
        /// against the package's settings schema. (Not `--config`: that is
        /// the configuration file of every command.) Left out: a new
        /// installation gets `{}`, an existing one keeps its own.
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
    },
    /// Uninstall a package for a tenant: its rules, directive kinds and
    /// public endpoints stop for the tenant; its data is kept.
    Uninstall {
        /// The package.
        package: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its admin token (shown once).
    Create {
        /// Unique name: a-z, 0-9 and '-'.
        slug: String,
        /// Print JSON: {"tenant_id", "slug", "admin_token"}.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List,
    /// Replace the tenant's own admin token with a new one, printed once;
    /// the old one stops working at once (members' tokens are kept).
    RotateToken {
        /// The tenant's slug.
        slug: String,
        /// Print JSON: {"tenant_id", "slug", "admin_token"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a member and print a one-time password (or, with --invite, a
    /// one-time sign-in link).
    Add {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The address they sign in with.
        #[arg(long)]
        email: String,
        /// The name the timeline shows (default: the email's local part).
        #[arg(long)]
        name: Option<String>,
        /// admin or agent.
        #[arg(long)]
        role: String,
        /// Print a sign-in link that sets their own password instead.
        #[arg(long)]
        invite: bool,
        /// The server's public URL, for the invite link.
        #[arg(
            long,
            env = "FLEETPROMPT_PUBLIC_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        public_url: String,
        /// Print JSON: {"member", "password"|"invite_token", "invite_link"}.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's members.
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Disable a member: they cannot sign in, and their sessions and
    /// tokens stop working at once.
    Disable {
        /// The member's email or id (`mem_…`).
        member: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Set a new one-time password, printed once; signs them out everywhere.
    ResetPassword {
        /// The member's email or id (`mem_…`).
        member: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
}

/// mimalloc instead of the system allocator: with glibc's malloc the
/// server spent about a third more CPU per widget message (see
/// `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The file's values become clap's defaults, so it is read first.
    let loaded = match config::load(&Cli::command(), &args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let command = config::apply(Cli::command(), &loaded);
    let matches = command.clone().get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Config(ConfigCommand::Show(_)) = &cli.command {
        let show = matches
            .subcommand_matches("config")
            .and_then(|m| m.subcommand_matches("show"))
            .unwrap_or(&matches);
        return match config::show(&Cli::command(), show, &loaded) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The database (migrated), a tenant by slug, and an engine over them: what
/// one-shot commands acting for a tenant need.
async fn tenant_engine(
    common: &settings::Common,
    slug: &str,
) -> anyhow::Result<(
    fleetprompt_store::Db,
    fleetprompt_store::tenant::Tenant,
    std::sync::Arc<fleetprompt_engine::Engine>,
)> {
    let db = common.open_db().await?;
    fleetprompt_store::migrate::run(&db)
        .await
        .context("migrating")?;
    let tenant = fleetprompt_store::tenant::find_by_slug(&db, slug)
        .await
        .with_context(|| format!("tenant {slug:?}"))?;
    let config = fleetprompt_engine::EngineConfig {
        outbound: common.outbound_policy(),
        ..Default::default()
    };
    let engine =
        fleetprompt_engine::Engine::new(db.clone(), common.master_key()?, config, packages());
    Ok((db, tenant, engine))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    settings::init_logging(&cli.common);
    match cli.command {
        Command::Serve(args) => serve::run(&cli.common, args).await,
        // Answered in `main`, before the runtime starts.
        Command::Config(ConfigCommand::Show(_)) => Ok(()),
        Command::Migrate => {
            let db = cli.common.open_db().await?;
            let n = fleetprompt_store::migrate::run(&db)
                .await
                .context("migrating")?;
            println!("{n} migration(s) applied");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create { slug, json }) => {
            let db = cli.common.open_db().await?;
            fleetprompt_store::migrate::run(&db)
                .await
                .context("migrating")?;
            let mut tx = db.begin().await?;
            let (tenant, token) = fleetprompt_store::tenant::create(&mut tx, &slug).await?;
            tx.commit().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "tenant_id": tenant.id, "slug": tenant.slug, "admin_token": token.token })
                );
            } else {
                println!("tenant {} created ({})", tenant.slug, tenant.id);
                println!("admin token (shown once, keep it safe): {}", token.token);
            }
            Ok(())
        }
        Command::Tenant(TenantCommand::List) => {
            let db = cli.common.open_db().await?;
            for t in fleetprompt_store::tenant::list(&db).await? {
                println!("{}\t{}", t.id, t.slug);
            }
            Ok(())
        }
        Command::Tenant(TenantCommand::RotateToken { slug, json }) => {
            let (db, t, engine) = tenant_engine(&cli.common, &slug).await?;
            let token =
                fleetprompt_engine::access::rotate_tenant_token(&engine, t.id, &cli_origin())
                    .await?;
            db.close().await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "tenant_id": t.id, "slug": t.slug, "admin_token": token.token })
                );
            } else {
                println!(
                    "admin token of {} rotated; the old one no longer works",
                    t.slug
                );
                println!("admin token (shown once, keep it safe): {}", token.token);
            }
            Ok(())
        }
        Command::User(cmd) => user(&cli.common, cmd).await,
        Command::Bench(cmd) => bench::run(&cli.common, cmd).await,
        Command::Site(SiteCommand::TestMessage {
            site,
            tenant,
            workflows,
            wait_secs,
        }) => {
            let site: fleetprompt_webchat::types::id::SiteId = site
                .parse()
                .with_context(|| format!("{site:?} is not a site id"))?;
            let (db, t, engine) = tenant_engine(&cli.common, &tenant).await?;
            fleetprompt_engine::rules::load(&engine, &workflows)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.report()))?;
            // Deep links in notifications point at the public URL.
            if let Ok(url) = std::env::var("FLEETPROMPT_PUBLIC_URL") {
                engine.set_public_url(&url);
            }
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let worker = tokio::spawn(fleetprompt_engine::worker::supervise(
                engine.clone(),
                stop_rx,
            ));
            let report = fleetprompt_webchat::verify::test_message(
                &engine,
                t.id,
                site,
                std::time::Duration::from_secs(wait_secs),
            )
            .await;
            let _ = stop.send(true);
            let _ = worker.await;
            db.close().await;
            println!("{}", serde_json::to_string_pretty(&report?)?);
            Ok(())
        }
        Command::Package(cmd) => package(&cli.common, cmd).await,
        Command::EdgeConnector(cmd) => edge_connector(&cli.common, cmd).await,
        Command::Prune(args) => prune::run(&cli.common, args).await,
        Command::Replay(args) => workflows::replay(&cli.common, args).await,
        Command::Workflows(cmd) => {
            if workflows::run(&cli.common, cmd).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

async fn package(common: &settings::Common, cmd: PackageCommand) -> anyhow::Result<()> {
    use fleetprompt_engine::installation;
    match cmd {
        PackageCommand::List { tenant, json } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let catalogue = installation::catalogue(&engine, t.id).await?;
            db.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&catalogue)?);
            } else {
                for p in catalogue {
                    let version = p.installation.as_ref().map_or("-", |i| i.version.as_str());
                    println!("{}\t{}\t{version}\t{}", p.slug, p.state, p.name);
                }
            }
        }
        PackageCommand::Install {
            package,
            tenant,
            settings,
        } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let config: Option<serde_json::Value> = settings
                .map(|s| serde_json::from_str(&s).context("--settings must be JSON"))
                .transpose()?;
            let (view, done) =
                installation::install(&engine, t.id, &package, config.as_ref()).await?;
            db.close().await;
            println!("{}", serde_json::to_string(&view)?);
            use fleetprompt_store::installation::Installed;
            let what = match done {
                Installed::New => "installed",
                Installed::Reinstalled => "installed again:",
                Installed::Reconfigured => "already installed:",
            };
            eprintln!("{what} {package} for {tenant}");
        }
        PackageCommand::Uninstall { package, tenant } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let view = installation::uninstall(&engine, t.id, &package).await?;
            db.close().await;
            println!("{}", serde_json::to_string(&view)?);
            eprintln!("uninstalled {package} for {tenant} (its data is kept)");
        }
    }
    Ok(())
}

/// Who acts from the command line, as the tenant's audit log records it.
fn cli_origin() -> fleetprompt_core::Origin {
    fleetprompt_core::Origin::System {
        component: "cli".into(),
    }
}

async fn user(common: &settings::Common, cmd: UserCommand) -> anyhow::Result<()> {
    use fleetprompt_engine::access::{self, FirstSecret};
    match cmd {
        UserCommand::Add {
            tenant,
            email,
            name,
            role,
            invite,
            public_url,
            json,
        } => {
            let role: fleetprompt_core::member::Role = role.parse()?;
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let (member, secret) = access::add_member(
                &engine,
                t.id,
                &email,
                name.as_deref(),
                role,
                invite,
                &cli_origin(),
            )
            .await?;
            db.close().await;
            // The token rides in the fragment, which browsers never send
            // to a server (nor put in a Referer).
            let link = |token: &str| {
                format!(
                    "{}/console/invite#{token}",
                    public_url.trim_end_matches('/')
                )
            };
            if json {
                let mut v = serde_json::json!({ "member": member });
                match &secret {
                    FirstSecret::Password(p) => v["password"] = serde_json::json!(p),
                    FirstSecret::Invite(tok) => {
                        v["invite_token"] = serde_json::json!(tok);
                        v["invite_link"] = serde_json::json!(link(tok));
                    }
                }
                println!("{v}");
            } else {
                println!(
                    "member {} ({}, {}) added to {tenant}",
                    member.email, member.id, member.role
                );
                match secret {
                    FirstSecret::Password(p) => println!("password: {p}"),
                    FirstSecret::Invite(tok) => println!("sign-in link (one use): {}", link(&tok)),
                }
            }
            Ok(())
        }
        UserCommand::List { tenant } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            for m in access::list_members(&engine, t.id).await? {
                let state = match (m.disabled_at, m.has_password) {
                    (Some(_), _) => "disabled",
                    (None, true) => "active",
                    (None, false) => "invited",
                };
                println!("{}\t{}\t{}\t{}\t{state}", m.id, m.email, m.name, m.role);
            }
            db.close().await;
            Ok(())
        }
        UserCommand::Disable { member, tenant } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let m = access::find_member(&engine, t.id, &member).await?;
            let patch = fleetprompt_store::member::MemberPatch {
                disabled: Some(true),
                ..Default::default()
            };
            access::update_member(&engine, t.id, m.id, patch, &cli_origin()).await?;
            db.close().await;
            println!("member {} ({}) disabled", m.email, m.id);
            Ok(())
        }
        UserCommand::ResetPassword { member, tenant } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let m = access::find_member(&engine, t.id, &member).await?;
            let p = access::reset_password(&engine, t.id, m.id, &cli_origin()).await?;
            db.close().await;
            println!(
                "password of {} reset; their sessions are signed out",
                m.email
            );
            println!("password: {p}");
            Ok(())
        }
    }
}

async fn edge_connector(
    common: &settings::Common,
    cmd: EdgeConnectorCommand,
) -> anyhow::Result<()> {
    match cmd {
        EdgeConnectorCommand::Create { tenant, name, json } => {
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let (connector, token) =
                fleetprompt_engine::edge::create_connector(&engine, t.id, &name).await?;
            db.close().await;
            if json {
                let mut v = serde_json::to_value(&connector)?;
                v["token"] = serde_json::json!(token.token);
                println!("{v}");
            } else {
                println!(
                    "edge connector {} ({}) created for {tenant}",
                    connector.name, connector.id
                );
                println!("token (shown once, keep it safe): {}", token.token);
            }
            Ok(())
        }
        EdgeConnectorCommand::List { tenant } => {
            let (db, t, _) = tenant_engine(common, &tenant).await?;
            for c in fleetprompt_store::edge::list(&db, t.id).await? {
                let seen = c
                    .last_seen_at
                    .map(fleetprompt_core::time::to_rfc3339)
                    .unwrap_or_else(|| "never".into());
                let state = if c.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let version = c.version.as_deref().unwrap_or("-");
                // The last error, on one line: a connector that is alive
                // but cannot send says why.
                let error = c
                    .last_error
                    .as_deref()
                    .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
                    .map(|e| {
                        let at = c
                            .last_error_at
                            .map(fleetprompt_core::time::to_rfc3339)
                            .unwrap_or_default();
                        format!("\tlast error {at}: {e}")
                    })
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{state}\tlast seen {seen}\tversion {version}{error}",
                    c.id, c.name
                );
            }
            db.close().await;
            Ok(())
        }
        EdgeConnectorCommand::Revoke { id, tenant } => {
            let id: fleetprompt_core::EdgeConnectorId = id
                .parse()
                .with_context(|| format!("{id:?} is not an edge connector id"))?;
            let (db, t, engine) = tenant_engine(common, &tenant).await?;
            let c = fleetprompt_engine::edge::revoke_connector(&engine, t.id, id).await?;
            db.close().await;
            println!("edge connector {} ({}) revoked", c.name, c.id);
            Ok(())
        }
    }
}

/// The packages this binary runs, in the order the engine registers them.
pub(crate) fn packages() -> Vec<std::sync::Arc<dyn Package>> {
    vec![fleetprompt_webchat::package()]
}

/// Every handler this binary runs, the packages' with the platform's, with
/// the packages' manifests loaded (for commands that need no engine).
pub(crate) fn handler_registry() -> fleetprompt_engine::HandlerRegistry {
    let packages = packages();
    package::load(&packages).unwrap_or_else(|e| panic!("package manifest: {e}"));
    package::handlers(&packages)
}
