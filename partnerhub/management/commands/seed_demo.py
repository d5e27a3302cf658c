import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.test.utils import override_settings

from accounts import demo as accounts_demo
from partnerhub.democlock import days_ago, real_now
from payouts import demo as payouts_demo
from referrals import demo as referrals_demo


class Command(BaseCommand):
    help = ("Create (or refresh) the demo network: a login for each of the 14 roles, programs, "
            "enrolments, referrals, won deals, commissions and a paid payout batch. Idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the logins as JSON.")
        parser.add_argument("--scale", type=int, default=0, metavar="N",
                            help="Also generate N referrals across the demo organizations.")

    def handle(self, *args, **options):
        # The demo's own notifications would flood the console: keep them in memory.
        # Each story happens on its own day (partnerhub.democlock): the network was set up
        # half a year ago, deals were registered, won and paid since.
        with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
            with days_ago(200):
                logins = accounts_demo.seed(settings.DEMO_PASSWORD,
                                            applied_at=real_now() - timedelta(days=1))
            referrals_demo.seed()
            payouts_demo.seed()
        if options["scale"]:
            made = referrals_demo.seed_scale(options["scale"])
            self.stderr.write(f"Generated {made} referrals.")
        if options["json"]:
            self.stdout.write(json.dumps([login.__dict__ for login in logins], indent=2))
            return
        header = ("email", "password", "organization", "kind", "role")
        widths = [max([len(h)] + [len(str(getattr(x, h))) for x in logins]) for h in header]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        self.stdout.write(self.style.SUCCESS("Demo logins (open http://127.0.0.1:8000/):"))
        self.stdout.write(line.format(*header))
        self.stdout.write(line.format(*("-" * w for w in widths)))
        for x in logins:
            self.stdout.write(line.format(x.email, x.password, x.organization, x.kind, x.role))
