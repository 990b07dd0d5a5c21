//! Why a rule set could not be loaded.

use std::fmt;
use std::path::PathBuf;

use crate::diagnostic::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file in it could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The files were read but the set is invalid; every problem found is
    /// listed, in file order, so one `check` run shows them all.
    #[error("{}", Listing(.0))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    /// The problems as `file:line:col` diagnostics; an I/O failure becomes
    /// one diagnostic at 1:1 of the path that failed.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            LoadError::Invalid(d) => d.clone(),
            LoadError::Io { path, source } => vec![Diagnostic {
                file: path.clone(),
                line: 1,
                col: 1,
                message: format!("cannot read: {source}"),
            }],
        }
    }

    /// Every diagnostic, one `file:line:col: message` per line.
    pub fn report(&self) -> String {
        self.diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Listing<'a>(&'a [Diagnostic]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in workflow rules",
            if n == 1 { "" } else { "s" }
        )?;
        for d in self.0 {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}
