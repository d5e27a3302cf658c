from celery import shared_task

from referrals import imports
from referrals.services import expire_stale_registrations, warn_expiring_registrations


@shared_task
def daily_protection_job() -> dict:
    """Warn 7 days ahead, then expire what ran out. Safe to run twice."""
    return {"warned": warn_expiring_registrations(), "expired": expire_stale_registrations()}


@shared_task
def run_import(job_id: int) -> bool:
    """Import a queued CSV job. The job is claimed with a conditional UPDATE (queued ->
    running), so a retried or duplicated delivery does nothing and returns False."""
    return imports.process_import(job_id)
