//! Settings shared by every command: defaults, then the configuration file
//! (`config.rs`), then `FLEETPROMPT_*` environment variables, then flags
//! (clap resolves the last two; the file feeds clap's environment).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fleetprompt_core::secret::MasterKey;
use fleetprompt_store::Db;
use fleetprompt_store::db::Durability;

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Settings every command shares.
#[derive(Debug, Args)]
pub struct Common {
    /// The configuration file: TOML, one `key = value` per setting, keyed by
    /// the flags' long names (`-` or `_`); environment and flags override
    /// it. Default: `./fleetprompt.toml` when present (docs/operations.md).
    /// Before or after the command (`package install` takes the package's
    /// own configuration as `--settings JSON`).
    #[arg(long, global = true, env = "FLEETPROMPT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Directory for the embedded database and the master key file.
    #[arg(
        long,
        global = true,
        env = "FLEETPROMPT_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://… (default: SQLite in the data directory).
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// SQLite durability: `normal` survives a process crash, `full` also a power loss.
    #[arg(
        long,
        global = true,
        env = "FLEETPROMPT_DURABILITY",
        default_value = "normal"
    )]
    pub durability: String,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "FLEETPROMPT_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Internal address ranges outbound requests (webhooks, Mattermost, LLM)
    /// may reach anyway, e.g. `10.1.0.0/16` for a Mattermost on the company
    /// network. Without it only public addresses are reachable.
    #[arg(
        long,
        global = true,
        env = "FLEETPROMPT_ALLOW_OUTBOUND",
        value_delimiter = ',',
        value_name = "CIDR[,CIDR…]"
    )]
    pub allow_outbound: Vec<fleetprompt_connectors::Cidr>,
    /// The master key that seals stored secrets, 64 hex digits (default:
    /// `<data dir>/master.key`, created on first use). Prefer the
    /// environment or the configuration file to this flag, which other
    /// local users can see in the process list.
    #[arg(
        long,
        global = true,
        env = "FLEETPROMPT_MASTER_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub master_key: Option<String>,
}

impl Common {
    /// The outbound policy these settings make.
    pub fn outbound_policy(&self) -> fleetprompt_connectors::OutboundPolicy {
        fleetprompt_connectors::OutboundPolicy::new(self.allow_outbound.clone())
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("fleetprompt.db").display()
            )
        })
    }

    /// Connects to the database.
    pub async fn open_db(&self) -> anyhow::Result<Db> {
        let durability: Durability = self.durability.parse().map_err(anyhow::Error::msg)?;
        let url = self.database_url();
        Db::connect(&url, durability)
            .await
            .with_context(|| format!("connecting to {}", redact_db_url(&url)))
    }

    /// Connects to this configuration's database as if the data directory were `dir`.
    pub async fn open_db_at(&self, dir: &Path) -> anyhow::Result<Db> {
        let durability: Durability = self.durability.parse().map_err(anyhow::Error::msg)?;
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("fleetprompt.db").display()));
        Ok(Db::connect(&url, durability).await?)
    }

    /// The master key: `--master-key` (or `FLEETPROMPT_MASTER_KEY`, or the
    /// file's `master_key`), else `<data dir>/master.key`, created with mode
    /// 0600 on first use.
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        if let Some(k) = &self.master_key {
            return MasterKey::parse(k).context("the master key (FLEETPROMPT_MASTER_KEY)");
        }
        load_or_create_key(&self.data_dir.join("master.key"))
    }
}

fn load_or_create_key(path: &Path) -> anyhow::Result<MasterKey> {
    match std::fs::read_to_string(path) {
        Ok(s) => MasterKey::parse(&s).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let key = MasterKey::generate();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            match opts.open(path) {
                Ok(mut f) => {
                    f.write_all(key.to_hex().as_bytes())?;
                    f.sync_all()?;
                    tracing::info!(path = %path.display(), "created a new master key; back it up with the database");
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A database URL without its password, for messages.
pub fn redact_db_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` filter.
pub fn init_logging(common: &Common) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,apalis=warn,apalis_core=warn,sqlx=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match common.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Checks a `host:port` bind address.
pub fn check_bind(bind: &str) -> anyhow::Result<std::net::SocketAddr> {
    match bind.parse() {
        Ok(a) => Ok(a),
        Err(_) => bail!("--bind {bind:?} is not an address like 127.0.0.1:8080"),
    }
}
