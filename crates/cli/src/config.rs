//! The configuration file, `fleetprompt.toml`, and `config show`.
//!
//! Layers, lowest first: defaults, the file, `FLEETPROMPT_*` environment
//! variables, flags. The file is read before the command line is parsed,
//! and each of its values becomes the default of the argument its key
//! names, so clap resolves environment and flags above it as usual. Keys and their variables come from clap's
//! own description of the arguments (every argument with an `env`, keyed by
//! its long name, `-` or `_`), so each setting is documented once, in its
//! doc comment, and a new flag is settable in the file without a list here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use toml::Spanned;

use crate::settings::redact_db_url;

/// The file read when neither `--config` nor `FLEETPROMPT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "fleetprompt.toml";

/// The environment variable that names the file (also `--config`'s).
pub const CONFIG_ENV: &str = "FLEETPROMPT_CONFIG";

/// What the file holds, by the environment variable of the argument each
/// key names.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Each setting's values (a list has several).
    values: BTreeMap<String, Vec<String>>,
    /// Each setting's `path:line`, for `config show`.
    set: BTreeMap<String, String>,
}

/// A settable argument: its file key and its environment variable.
struct Setting {
    key: String,
    env: String,
}

/// Every argument of `cmd` and its subcommands that has an environment
/// variable, by file key (`_` for `-`). The same flag on two subcommands
/// (`--workflows`) shares its variable, so it is one key.
fn settings(cmd: &Command) -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    collect(cmd, &mut out);
    out
}

fn collect(cmd: &Command, out: &mut BTreeMap<String, Setting>) {
    for arg in cmd.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let env = env.to_string_lossy().into_owned();
        // The file cannot name another file.
        if env == CONFIG_ENV {
            continue;
        }
        let key = long.replace('-', "_");
        out.entry(key.clone()).or_insert(Setting { key, env });
    }
    for sub in cmd.get_subcommands() {
        collect(sub, out);
    }
}

/// The file named by `--config PATH` / `--config=PATH` anywhere on the raw
/// command line (before or after the command; `package install` takes its
/// configuration as `--settings`), else by `FLEETPROMPT_CONFIG`, else
/// `./fleetprompt.toml` when it exists. A file named explicitly must exist
/// (reading it fails otherwise).
fn locate(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_PATH);
    default.is_file().then_some(default)
}

/// Reads the configuration file, if any. Call before parsing the command
/// line, then [`apply`] it to the command.
pub fn load(cmd: &Command, args: &[OsString]) -> anyhow::Result<Loaded> {
    let Some(path) = locate(args) else {
        return Ok(Loaded::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let mut loaded = Loaded::default();
    for (env, values, at) in parse(&path, &text, &settings(cmd))? {
        loaded.values.insert(env.clone(), values);
        loaded.set.insert(env, at);
    }
    loaded.path = Some(path);
    Ok(loaded)
}

/// The command with the file's values as the defaults of the arguments
/// they name, so clap still prefers the environment and flags to them.
pub fn apply(mut cmd: Command, loaded: &Loaded) -> Command {
    if loaded.values.is_empty() {
        return cmd;
    }
    let ids: Vec<(clap::Id, Vec<String>, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy();
            let values = loaded.values.get(env.as_ref())?;
            let secret = a
                .get_long()
                .is_some_and(|l| is_secret(&l.replace('-', "_")));
            Some((a.get_id().clone(), values.clone(), secret))
        })
        .collect();
    for (id, values, secret) in ids {
        // clap takes `'static` defaults without its `string` feature; the
        // file is read once per process, so leaking its few values is free.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        cmd = cmd.mut_arg(id, |a| {
            a.default_values(values)
                .required(false)
                .hide_default_value(secret)
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| apply(s, loaded));
    }
    cmd
}

/// The file's `(variable, values, "path:line")` triples, or the first
/// problem as `path:line:col: …`.
fn parse(
    path: &Path,
    text: &str,
    known: &BTreeMap<String, Setting>,
) -> anyhow::Result<Vec<(String, Vec<String>, String)>> {
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.message())
            }
            None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
        })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let (line, col) = line_col(text, key.span().start);
        let at = |msg: String| anyhow::anyhow!("{}:{line}:{col}: {msg}", path.display());
        let name = key.get_ref().replace('-', "_");
        let Some(setting) = known.get(&name) else {
            return Err(at(format!("unknown setting {:?}", key.get_ref())));
        };
        let rendered = match value.get_ref() {
            toml::Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match scalar(item) {
                        Some(s) => parts.push(s),
                        None => {
                            return Err(at(format!(
                                "{}: a list holds strings, numbers or booleans",
                                setting.key
                            )));
                        }
                    }
                }
                parts
            }
            v => vec![scalar(v).ok_or_else(|| {
                at(format!(
                    "{}: expected a string, number, boolean or list",
                    setting.key
                ))
            })?],
        };
        out.push((
            setting.env.clone(),
            rendered,
            format!("{}:{line}", path.display()),
        ));
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Whether a setting's value is a secret, by its name: the master key,
/// and anything named like a token, key or password.
fn is_secret(key: &str) -> bool {
    key.ends_with("_token") || key.ends_with("_key") || key.contains("password") || key == "key"
}

/// Prints the effective configuration of `serve` with these flags, one
/// setting a line as TOML (so it can seed a file), each with where its
/// value came from; secrets redacted.
pub fn show(cmd: &Command, matches: &ArgMatches, loaded: &Loaded) -> anyhow::Result<String> {
    let known = settings(cmd);
    let by_env: BTreeMap<&str, &Setting> = known.values().map(|s| (s.env.as_str(), s)).collect();
    let mut out = String::new();
    match &loaded.path {
        Some(p) => out.push_str(&format!("# configuration file: {}\n", p.display())),
        None => out.push_str("# configuration file: none\n"),
    }
    let mut seen = std::collections::BTreeSet::new();
    let show_cmd = cmd
        .find_subcommand("config")
        .and_then(|c| c.find_subcommand("show"))
        .context("the config show command")?;
    for arg in cmd.get_arguments().chain(show_cmd.get_arguments()) {
        let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some(setting) = by_env.get(env.as_str()) else {
            continue;
        };
        if !seen.insert(setting.key.clone()) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!("env {env}"),
            Some(ValueSource::DefaultValue) => match loaded.set.get(&env) {
                Some(at) => format!("file {at}"),
                None => "default".to_owned(),
            },
            _ => "unset".to_owned(),
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let multiple = arg.get_value_delimiter().is_some();
        let line = if values.is_empty() && !multiple {
            format!("# {} is not set", setting.key)
        } else {
            let shown: Vec<String> = values
                .iter()
                .map(|v| redact(&setting.key, v))
                .map(|v| toml_value(&v))
                .collect();
            if multiple {
                format!("{} = [{}]", setting.key, shown.join(", "))
            } else {
                format!("{} = {}", setting.key, shown.join(","))
            }
        };
        out.push_str(&format!("{line:<60} # {source}\n"));
    }
    Ok(out)
}

fn redact(key: &str, value: &str) -> String {
    if key == "database_url" {
        redact_db_url(value)
    } else if is_secret(key) {
        "***".to_owned()
    } else {
        value.to_owned()
    }
}

/// A value as TOML: numbers and booleans bare, anything else a string.
fn toml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_owned()
    } else {
        toml::Value::String(v.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, Setting> {
        let mut m = BTreeMap::new();
        for (k, e) in [
            ("bind", "FLEETPROMPT_BIND"),
            ("allow_outbound", "FLEETPROMPT_ALLOW_OUTBOUND"),
        ] {
            m.insert(
                k.to_owned(),
                Setting {
                    key: k.to_owned(),
                    env: e.to_owned(),
                },
            );
        }
        m
    }

    /// `--config` names the file before or after the command (the package
    /// settings are `package install --settings`), and not past `--`.
    #[test]
    fn config_is_found_before_or_after_the_command() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for line in [
            &["fleetprompt", "--config", "a.toml", "serve"][..],
            &["fleetprompt", "serve", "--config", "a.toml"],
            &[
                "fleetprompt",
                "package",
                "install",
                "website_chat",
                "--config=a.toml",
            ],
        ] {
            assert_eq!(
                locate(&args(line)),
                Some(PathBuf::from("a.toml")),
                "{line:?}"
            );
        }
        let past = args(&["fleetprompt", "--", "--config", "b.toml"]);
        assert_ne!(locate(&past), Some(PathBuf::from("b.toml")));
    }

    #[test]
    fn unknown_keys_are_refused_with_line_and_column() {
        let e = parse(
            Path::new("f.toml"),
            "bind = \"127.0.0.1:1\"\n  colour = 3\n",
            &known(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f.toml:2:3: unknown setting \"colour\"");
    }

    #[test]
    fn lists_join_and_dashes_match() {
        let v = parse(
            Path::new("f.toml"),
            "allow-outbound = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n",
            &known(),
        )
        .unwrap();
        assert_eq!(
            v,
            vec![(
                "FLEETPROMPT_ALLOW_OUTBOUND".to_owned(),
                vec!["10.0.0.0/8".to_owned(), "192.168.0.0/16".to_owned()],
                "f.toml:1".to_owned()
            )]
        );
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("master_key", "abcd"), "***");
        assert_eq!(
            redact("database_url", "postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact("bind", "127.0.0.1:1"), "127.0.0.1:1");
    }
}
