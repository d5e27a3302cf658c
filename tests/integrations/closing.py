"""Closing a deal by hand in tests, the way a vendor does on the referral's page."""

from django.utils import timezone

from integrations.closing import close_deal


def close(actor, referral, outcome, **fields):
    """Close the referral's deal as won, lost or reopened (today, for its estimated amount
    unless given)."""
    fields.setdefault("closed_on", timezone.localdate())
    fields.setdefault("amount_minor", referral.amount_minor or 100_000)
    return close_deal(actor, referral, outcome, **fields)
