"""Salesforce: referrals become Leads (or Account + Contact + Opportunity) upserted by an
External ID field; Opportunity changes come back by polling. See SETUP.md for the vendor's side."""
