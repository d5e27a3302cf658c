from payouts.models import Balance, Commission, LedgerEntry


def test_a_won_deal_earns_a_pending_commission(won, world):
    assert won is not None
    assert (won.amount_minor, won.currency, won.status) == (100_000, "USD", Commission.PENDING)
    assert won.partner == world.partner
    entry = LedgerEntry.objects.get(commission=won)
    assert (entry.kind, entry.amount_minor) == ("earned", 100_000)
    assert Balance.objects.get(partner=world.partner, currency="USD").amount_minor == 100_000
