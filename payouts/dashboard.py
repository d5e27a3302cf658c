"""The money tile on the dashboard, per side: a partner's earnings and what blocks its
payouts; vendor finance's approval queue; operator finance's next batch and failures. A few
aggregate queries, whatever the volume."""

from django.db.models import Count, Sum

from accounts import roles
from accounts.permissions import permissions_of
from payouts.models import Commission, Payout, PayoutAccount, PayoutBatch, TaxProfile
from payouts.tax import profile_problems


def _sums(queryset) -> list[tuple[str, int, int]]:
    rows = queryset.values("currency").annotate(total=Sum("amount_minor"), n=Count("pk"))
    return sorted((r["currency"], r["total"], r["n"]) for r in rows)


TITLES = {roles.PARTNER: "Earnings", roles.VENDOR: "Commissions to approve",
          roles.OPERATOR: "Payouts"}


def money_tile(membership, *, compute: bool = True) -> dict | None:
    """The tile for this membership, or None. The dashboard only places it (compute=False:
    no queries); its figures load right after from payouts:money_tile, like the attribution
    metrics, so the dashboard's own cost does not grow."""
    perms = permissions_of(membership)
    org = membership.organization
    wanted = {roles.PARTNER: roles.COMMISSION_VIEW, roles.VENDOR: roles.COMMISSION_APPROVE,
              roles.OPERATOR: roles.PAYOUT_MANAGE}
    if wanted.get(org.kind) not in perms:
        return None
    if not compute:
        return {"title": TITLES[org.kind], "side": org.kind, "placeholder": True}
    if org.kind == roles.PARTNER:
        mine = Commission.objects.visible_to(membership)
        account = PayoutAccount.objects.filter(partner=org).first()
        profile = TaxProfile.objects.filter(partner=org).first()
        blockers = []
        if account is None:
            blockers.append(("Connect a payout account to be paid.", "payouts:payout_account"))
        elif not account.can_receive_transfers:
            blockers.append(("Finish your payout account's onboarding.",
                             "payouts:payout_account"))
        if profile_problems(profile):
            blockers.append(("Complete your tax profile.", "payouts:tax_profile"))
        return {"side": "partner", "title": "Earnings",
                "pending": _sums(mine.filter(status=Commission.PENDING)),
                "payable": _sums(mine.filter(status__in=(Commission.PAYABLE,
                                                         Commission.APPROVED))),
                "blockers": blockers}
    if org.kind == roles.VENDOR:
        return {"side": "vendor", "title": "Commissions to approve",
                "payable": _sums(Commission.objects.visible_to(membership)
                                 .filter(status=Commission.PAYABLE))}
    unbatched = Commission.objects.visible_to(membership).filter(
        status=Commission.APPROVED, payout__isnull=True)
    batches = PayoutBatch.objects.visible_to(membership)
    return {"side": "operator", "title": "Payouts", "unbatched": _sums(unbatched),
            "awaiting_approval": batches.filter(status=PayoutBatch.DRAFT).count(),
            # Failed payouts that wait for a person (not those Stripe will be asked again).
            "failed": Payout.objects.visible_to(membership).filter(
                status=Payout.FAILED, next_attempt_at__isnull=True).count()}
