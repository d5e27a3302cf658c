"""Payout pages. Each views module owns its URL patterns (earnings and payout history for
partners, commissions for vendor finance, plans for vendor admins, payout accounts, tax, batches
for operator finance, and Stripe's webhook)."""

from payouts.views import (
    accounts,
    batches,
    clawbacks,
    commissions,
    deal_money,
    earnings,
    plans,
    tax,
    webhooks,
)

app_name = "payouts"

urlpatterns = [
    *earnings.urlpatterns,
    *commissions.urlpatterns,
    *deal_money.urlpatterns,
    *plans.urlpatterns,
    *accounts.urlpatterns,
    *tax.urlpatterns,
    *batches.urlpatterns,
    *clawbacks.urlpatterns,
    *webhooks.urlpatterns,
]
