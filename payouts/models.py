# Commission plans, the ledger and payout batches arrive with the payouts issue.
