from django.core.management.base import BaseCommand, CommandError

from payouts.consistency import check_ledger


class Command(BaseCommand):
    help = ("Verify the commission ledger: every partner's balance is the sum of its entries, "
            "every commission's entries match its status, every paid payout has its entry. "
            "Exits non-zero when anything is off.")

    def handle(self, *args, **options):
        problems = check_ledger()
        for problem in problems:
            self.stderr.write(str(problem))
        if problems:
            raise CommandError(f"{len(problems)} ledger problem(s) found.")
        self.stdout.write(self.style.SUCCESS("Ledger consistent: balances, commissions and "
                                             "payouts add up."))
