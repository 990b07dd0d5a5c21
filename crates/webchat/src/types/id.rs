//! The website chat package's ids, defined with the platform's
//! [`define_id!`](fleetprompt_core::define_id): the same UUIDv7 form and
//! parsing as the platform's ids. Their SQL column type is given in the
//! package's store module.

fleetprompt_core::define_id!(
    /// A website registered for the chat widget.
    SiteId, "site", "site"
);
fleetprompt_core::define_id!(
    /// A chat conversation between a visitor and the tenant.
    ConversationId, "conv", "conversation"
);
fleetprompt_core::define_id!(
    /// One chat message (visitor, assistant or agent).
    MessageId, "msg", "message"
);
fleetprompt_core::define_id!(
    /// An anonymous website visitor, remembered by the widget.
    VisitorId, "vis", "visitor"
);
fleetprompt_core::define_id!(
    /// A tenant's saved reply: a snippet members insert into the reply box.
    SavedReplyId, "srep", "saved reply"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_their_prefixes() {
        let c = ConversationId::new();
        let s = c.to_string();
        assert!(s.starts_with("conv_"), "{s}");
        assert_eq!(s.len(), 5 + 32);
        assert_eq!(s.parse::<ConversationId>().unwrap(), c);
        let err = SiteId::new().to_string().parse::<VisitorId>().unwrap_err();
        assert_eq!(err.expected, "visitor");
        assert!(MessageId::new().to_string().starts_with("msg_"));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ConversationId>(&json).unwrap(), c);
    }
}
