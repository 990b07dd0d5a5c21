//! Saved replies: a tenant's own snippets, which members insert into the
//! reply box beside the FAQ's answers. Any member may add, edit or delete
//! them: they are the team's shared wording, and nothing leaves the system
//! until a member sends the reply they went into.

use fleetprompt_core::TenantId;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::time::now_ms;
use fleetprompt_engine::Engine;

use crate::error::{WebchatError, invalid};
use crate::store::saved_reply::{self as store, MAX_PER_TENANT, SavedReplyRow};
use crate::types::id::SavedReplyId;

/// Longest title, in characters.
pub const MAX_TITLE: usize = 80;
/// Longest text, in characters.
pub const MAX_CONTENT: usize = 4000;

/// A title and text checked for storing: trimmed, within their limits, and
/// free of control characters the databases or the page would mangle.
fn checked<'a>(title: &'a str, content: &'a str) -> Result<(&'a str, &'a str), WebchatError> {
    let title = title.trim();
    let content = content.trim();
    if title.is_empty() {
        return Err(invalid("title", "a saved reply needs a title"));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(invalid("title", format!("at most {MAX_TITLE} characters")));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid("title", "a title is one line of text"));
    }
    if content.is_empty() {
        return Err(invalid("content", "a saved reply needs some text"));
    }
    if content.chars().count() > MAX_CONTENT {
        return Err(invalid(
            "content",
            format!("at most {MAX_CONTENT} characters"),
        ));
    }
    if content.contains('\0') {
        return Err(invalid("content", "the text holds a NUL character"));
    }
    Ok((title, content))
}

/// The tenant's saved replies, by title.
pub async fn list(engine: &Engine, tenant: TenantId) -> Result<Vec<SavedReplyRow>, WebchatError> {
    Ok(store::list(engine.db(), tenant).await?)
}

/// Adds a saved reply.
pub async fn add(
    engine: &Engine,
    tenant: TenantId,
    by: Option<MemberId>,
    title: &str,
    content: &str,
) -> Result<SavedReplyRow, WebchatError> {
    let (title, content) = checked(title, content)?;
    let now = now_ms();
    let row = SavedReplyRow {
        id: SavedReplyId::new(),
        title: title.to_owned(),
        content: content.to_owned(),
        created_by: by,
        created_at: now,
        updated_at: now,
    };
    let mut tx = engine.db().begin().await?;
    if store::count_tx(&mut tx, tenant).await? >= MAX_PER_TENANT {
        return Err(invalid(
            "title",
            format!("a tenant keeps at most {MAX_PER_TENANT} saved replies; delete one first"),
        ));
    }
    store::insert(&mut tx, tenant, &row).await?;
    tx.commit().await?;
    Ok(row)
}

/// Changes a saved reply's title and text.
pub async fn edit(
    engine: &Engine,
    tenant: TenantId,
    id: SavedReplyId,
    title: &str,
    content: &str,
) -> Result<(), WebchatError> {
    let (title, content) = checked(title, content)?;
    let mut tx = engine.db().begin().await?;
    if !store::update(&mut tx, tenant, id, title, content, now_ms()).await? {
        return Err(WebchatError::NotFound("saved reply".into()));
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a saved reply.
pub async fn remove(
    engine: &Engine,
    tenant: TenantId,
    id: SavedReplyId,
) -> Result<(), WebchatError> {
    let mut tx = engine.db().begin().await?;
    if !store::delete(&mut tx, tenant, id).await? {
        return Err(WebchatError::NotFound("saved reply".into()));
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_texts_are_checked() {
        assert_eq!(checked("  Hi ", " text ").unwrap(), ("Hi", "text"));
        assert!(checked("", "text").is_err());
        assert!(checked("a\nb", "text").is_err());
        assert!(checked(&"x".repeat(MAX_TITLE + 1), "text").is_err());
        assert!(checked("Hi", "  ").is_err());
        assert!(checked("Hi", "a\0b").is_err());
        assert!(checked("Hi", &"é".repeat(MAX_CONTENT)).is_ok());
    }
}
