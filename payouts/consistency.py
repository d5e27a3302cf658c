"""Proof that the ledger adds up. Three invariants, each one set-based query:

1. every balance equals the sum of its partner's entries in that currency (and every partner
   with entries has a balance);
2. every commission's own entries sum to its amount while it earns (pending, payable, approved,
   paid) and to zero once rejected, cancelled or clawed back;
3. every paid payout has exactly one `paid` entry of minus its amount; no other payout has one.
"""

from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from payouts.models import Balance, Commission, LedgerEntry, Payout


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    detail: str

    def __str__(self):
        return f"{self.kind}: {self.subject}: {self.detail}"


def _sum_of(entries):
    return Coalesce(Subquery(entries.values("partner_id").annotate(s=Sum("amount_minor"))
                             .values("s")[:1]), Value(0))


def check_ledger(network_id=None) -> list[Problem]:
    problems = []
    balances = Balance.objects.all()
    entries = LedgerEntry.objects.all()
    commissions = Commission.objects.all()
    payouts = Payout.objects.all()
    if network_id is not None:
        balances, entries = balances.filter(network_id=network_id), entries.filter(
            network_id=network_id)
        commissions, payouts = commissions.filter(network_id=network_id), payouts.filter(
            network_id=network_id)

    summed = balances.annotate(entries_sum=_sum_of(LedgerEntry.objects.filter(
        partner_id=OuterRef("partner_id"), currency=OuterRef("currency")))).exclude(
        amount_minor=F("entries_sum")).select_related("partner")
    for b in summed:
        problems.append(Problem("balance", f"{b.partner.name} {b.currency}",
                                f"balance {b.amount_minor} but entries sum to {b.entries_sum}"))
    orphans = (entries.values("partner_id", "currency").annotate(n=Count("pk"))
               .filter(~Exists(Balance.objects.filter(partner_id=OuterRef("partner_id"),
                                                       currency=OuterRef("currency")))))
    for row in orphans:
        problems.append(Problem("balance", f"partner {row['partner_id']} {row['currency']}",
                                f"{row['n']} entries but no balance row"))

    own = Coalesce(Subquery(LedgerEntry.objects.filter(commission_id=OuterRef("pk"))
                            .values("commission_id").annotate(s=Sum("amount_minor"))
                            .values("s")[:1]), Value(0))
    wrong = commissions.annotate(own=own).filter(
        Q(status__in=Commission.EARNING) & ~Q(own=F("amount_minor"))
        | ~Q(status__in=Commission.EARNING) & ~Q(own=0))
    for c in wrong:
        problems.append(Problem("commission", str(c.public_id),
                                f"status {c.status}, amount {c.amount_minor}, "
                                f"its entries sum to {c.own}"))

    paid = Coalesce(Subquery(LedgerEntry.objects.filter(payout_id=OuterRef("pk"), kind="paid")
                             .values("payout_id").annotate(s=Sum("amount_minor"))
                             .values("s")[:1]), Value(0))
    was_paid = Q(status__in=[Payout.PAID, Payout.REVERSED])
    wrong_payouts = payouts.annotate(paid=paid).filter(
        was_paid & ~Q(paid=-F("amount_minor")) | ~was_paid & ~Q(paid=0))
    for p in wrong_payouts:
        problems.append(Problem("payout", str(p.public_id),
                                f"status {p.status}, amount {p.amount_minor}, "
                                f"paid entries sum to {p.paid}"))
    return problems
