"""HubSpot: a private app's token pushes companies, contacts and deals; deal changes come back
by signed webhooks (v3 signature) and by polling the deals search API."""
