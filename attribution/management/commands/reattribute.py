from datetime import UTC, date, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from attribution.models import Attribution
from attribution.name_keys import refresh_common_words
from attribution.runner import backfill
from attribution.services import attribution_changed


class Command(BaseCommand):
    help = ("Re-run attribution for a vendor's won deals closed since a date, in batches. "
            "Safe to repeat: unchanged deals are skipped, people's decisions are kept.")

    def add_arguments(self, parser):
        parser.add_argument("--vendor", required=True,
                            help="Vendor organization: slug or public id.")
        parser.add_argument("--since", required=True, type=date.fromisoformat,
                            help="YYYY-MM-DD: deals closed on or after this day (UTC).")
        parser.add_argument("--batch", type=int, default=500)
        parser.add_argument("--workers", type=int, default=1,
                            help="Processes to run the batches in (PostgreSQL; default 1). "
                                 "More than the machine's cores buys nothing.")

    def handle(self, *args, vendor, since, batch, workers=1, **options):
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if isinstance(since, str):  # call_command(since="2026-01-01") skips the parser
            since = date.fromisoformat(since)
        org = (Organization.objects.filter(kind="vendor", slug=vendor).first()
               or _by_public_id(vendor))
        if org is None:
            raise CommandError(f"No vendor organization {vendor!r}.")
        start = datetime.combine(since, time.min, UTC)

        def progress(done, total):
            self.stdout.write(f"{done}/{total} deals")

        began = timezone.now()
        # The fuzzy-name lookup leaves out the vendor's common words: count them as they are
        # now (the nightly count may be a day old, or not have run on a new vendor yet).
        refresh_common_words([org.pk])
        total = backfill(org.pk, start, batch=batch, progress=progress, workers=workers)
        # Commissions follow what the backfill changed, in chunks of tasks.
        changed = list(Attribution.objects.filter(vendor=org, updated_at__gte=began)
                       .values_list("pk", flat=True))
        for i in range(0, len(changed), batch):
            with transaction.atomic():
                attribution_changed(changed[i:i + batch])
        self.stdout.write(self.style.SUCCESS(f"Re-attributed {total} deals of {org.name}."))


def _by_public_id(value):
    try:
        return Organization.objects.filter(kind="vendor", public_id=value).first()
    except Exception:  # not a UUID
        return None
