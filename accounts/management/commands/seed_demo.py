import json

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.demo import seed


class Command(BaseCommand):
    help = "Create (or refresh) the demo network with a login for each of the 14 roles."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the logins as JSON.")

    def handle(self, *args, **options):
        logins = seed(settings.DEMO_PASSWORD)
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
