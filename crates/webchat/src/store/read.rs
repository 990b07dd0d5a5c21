//! When each member last opened each conversation (the inbox's unread
//! marks are per member).

use crate::types::id::ConversationId;
use fleetprompt_core::TenantId;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::time::Millis;

use fleetprompt_store::{Db, Result, Tx, on_db, on_tx};

/// When `member` last opened `conversation`, if ever.
pub async fn get(
    db: &Db,
    tenant: TenantId,
    member: MemberId,
    conversation: ConversationId,
) -> Result<Option<Millis>> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar(
            "SELECT read_at FROM website_chat_reads
             WHERE tenant_id = $1 AND member_id = $2 AND conversation_id = $3",
        )
        .bind(tenant.to_string())
        .bind(member.to_string())
        .bind(conversation)
        .fetch_optional(c)
        .await?)
    })
}

/// Records that `member` opened `conversation` at `at`; an earlier time
/// never replaces a later one.
pub async fn mark(
    tx: &mut Tx,
    tenant: TenantId,
    member: MemberId,
    conversation: ConversationId,
    at: Millis,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_reads (tenant_id, member_id, conversation_id, read_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, member_id, conversation_id)
             DO UPDATE SET read_at = excluded.read_at WHERE website_chat_reads.read_at < excluded.read_at",
        )
        .bind(tenant.to_string())
        .bind(member.to_string())
        .bind(conversation)
        .bind(at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}
