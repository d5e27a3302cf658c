# CRM connections, the sync outbox and webhooks arrive with the CRM sync issue.
