//! Notices between nodes: on PostgreSQL, a commit that makes work due or
//! changes cached configuration NOTIFYs the other nodes (see
//! [`WAKE_CHANNEL`] and [`CONFIG_CHANNEL`]); a [`Listener`] hears them.
//! SQLite has one node and no notices.

use sqlx::postgres::PgListener;

use crate::db::{CONFIG_CHANNEL, WAKE_CHANNEL};
use crate::{Db, Result};

/// What another node told this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Work became due: wake the worker.
    WorkDue,
    /// A site or destination changed: cached configuration is stale.
    ConfigChanged,
}

/// A connection that LISTENs on both channels.
pub struct Listener(PgListener);

/// Opens a listener on its own connection; `None` on a backend without
/// notices (SQLite). A failed connect is an error: retry later.
pub async fn listen(db: &Db) -> Result<Option<Listener>> {
    let Some(pool) = db.pg_pool() else {
        return Ok(None);
    };
    let mut l = PgListener::connect_with(pool).await?;
    l.listen_all([WAKE_CHANNEL, CONFIG_CHANNEL]).await?;
    Ok(Some(Listener(l)))
}

impl Listener {
    /// The next notice. An error means the connection was lost: notices
    /// may have been missed; open a new listener.
    pub async fn recv(&mut self) -> Result<Notice> {
        let n = self.0.recv().await?;
        Ok(if n.channel() == CONFIG_CHANNEL {
            Notice::ConfigChanged
        } else {
            Notice::WorkDue
        })
    }
}
