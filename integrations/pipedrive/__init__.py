"""Pipedrive: organizations, persons and deals (or leads) over Pipedrive's REST API; deal
changes come back by webhooks v2 (HTTP basic auth) and by polling."""
