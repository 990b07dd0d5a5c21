-- Email escalation, both directions: each Edge Connector keeps the last
-- error it reported (an SMTP refusal, a TLS failure) and when, so the admin
-- listing shows a connector that is alive but failing, not only a silent one.
ALTER TABLE edge_connectors ADD COLUMN last_error TEXT;
ALTER TABLE edge_connectors ADD COLUMN last_error_at BIGINT;
