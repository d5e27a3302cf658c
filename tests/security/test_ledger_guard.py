"""The ledger refuses to post outside a transaction even under `python -O` (issue 17)."""

import ast
from pathlib import Path

import pytest
from django.db.transaction import TransactionManagementError

from payouts import ledger
from payouts.models import LedgerEntry


@pytest.mark.django_db(transaction=True)
def test_post_outside_a_transaction_raises_an_explicit_error():
    with pytest.raises(TransactionManagementError, match="transaction"):
        ledger.post([LedgerEntry()])


def test_the_ledger_guards_with_no_assert_statement():
    # `assert` vanishes under `python -O`; a guard must be an explicit check.
    tree = ast.parse(Path(ledger.__file__).read_text())
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts == []
