from celery import shared_task

from referrals.services import expire_stale_registrations, warn_expiring_registrations


@shared_task
def daily_protection_job() -> dict:
    """Warn 7 days ahead, then expire what ran out. Safe to run twice."""
    return {"warned": warn_expiring_registrations(), "expired": expire_stale_registrations()}
