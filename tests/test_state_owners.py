"""One owner per state: a referral's status changes only in the referrals lifecycle, an
attribution's only in attribution's services, a commission's, payout's and batch's only in
payouts' services. This test reads the code (like Zulip's lint rules for its single writers)
and fails when any other module writes the `status` of one of those models: assigning
`x.status`, `.update(status=...)`, `.bulk_update(..., ["status", ...])`, or creating a row with
a status (`Model(status=...)`, `Model.objects.create(status=...)`).

The model behind an expression is read from the names: `Referral.objects...`, a related
manager (`batch.payouts`), or a variable named after the model (`referral`, `won_referral`).
A status written through a name the test cannot place must be in an owner module; elsewhere,
name the variable after its model."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "referrals", "attribution", "payouts", "integrations", "partnerhub")

OWNERS = {
    "Referral": {"referrals/services/lifecycle.py"},
    "Attribution": {"attribution/runner.py", "attribution/decisions.py"},
    "Commission": {"payouts/ledger.py", "payouts/approvals.py", "payouts/transfers.py",
                   "payouts/batches.py"},
    "Payout": {"payouts/transfers.py", "payouts/batches.py", "payouts/recovery.py"},
    "PayoutBatch": {"payouts/transfers.py", "payouts/batches.py"},
}
# Variable and related-manager names, by the model they hold.
NAMES = {
    "referral": "Referral", "referrals": "Referral",
    "attribution": "Attribution", "attributions": "Attribution",
    "commission": "Commission", "commissions": "Commission",
    "payout": "Payout", "payouts": "Payout",
    "batch": "PayoutBatch", "payout_batch": "PayoutBatch", "batches": "PayoutBatch",
}
# Names of other models' rows whose status is not guarded here.
OTHER_MODELS = {"membership", "target", "org", "organization", "enrolment", "record",
                "dispute", "job", "connection", "account", "profile", "self", "exc", "error"}
ALL_OWNERS = set().union(*OWNERS.values())
# Writers outside the owners, each with its reason. Keep this short.
EXEMPT = {
    # `seed_demo --scale`: synthetic history for benchmarks, bulk-created in every status.
    ("referrals/demo.py", "Referral"),
}


def _model_of_name(name: str) -> str | None:
    """'won_referral' -> 'Referral'; None when the name says nothing."""
    if name in OWNERS:
        return name
    for suffix, model in NAMES.items():
        if name == suffix or name.endswith("_" + suffix):
            return model
    return None


def _base_name(node) -> str | None:
    """The name an attribute chain or call chain starts from, skipping queryset calls:
    `Commission.objects.filter(...).exclude(...)` -> 'Commission', `batch.payouts.filter()`
    -> 'payouts' (the related manager names the model), `rows` -> 'rows'."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            if node.attr == "objects" and isinstance(node.value, ast.Name):
                return node.value.id
            if node.attr in NAMES and not isinstance(node.value, ast.Call):
                return node.attr
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _has_status_keyword(call: ast.Call) -> bool:
    return any(k.arg == "status" for k in call.keywords)


def _lists_status(call: ast.Call) -> bool:
    return any(isinstance(arg, (ast.List, ast.Tuple)) and any(
        isinstance(e, ast.Constant) and e.value == "status" for e in arg.elts)
        for arg in list(call.args) + [k.value for k in call.keywords])


def status_writes(source: str):
    """(line, expression name, what) for every write of a `status` in the source."""
    for node in ast.walk(ast.parse(source)):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(t, ast.Attribute) and t.attr == "status":
                    yield node.lineno, _base_name(t.value), "assigns .status"
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr == "update" and _has_status_keyword(node):
                yield node.lineno, _base_name(func.value), ".update(status=...)"
            elif func.attr == "bulk_update" and _lists_status(node):
                yield node.lineno, _base_name(func.value), ".bulk_update of status"
            elif func.attr in ("create", "get_or_create", "update_or_create") and (
                    _has_status_keyword(node) or _defaults_status(node)):
                yield node.lineno, _base_name(func.value), f".{func.attr}(status=...)"
        elif isinstance(func, ast.Name) and func.id in OWNERS and _has_status_keyword(node):
            yield node.lineno, func.id, f"{func.id}(status=...)"


def _defaults_status(call: ast.Call) -> bool:
    return any(k.arg == "defaults" and isinstance(k.value, ast.Dict) and any(
        isinstance(key, ast.Constant) and key.value == "status" for key in k.value.keys)
        for k in call.keywords)


def violations(path: str, source: str) -> list[str]:
    found = []
    for line, name, what in status_writes(source):
        model = _model_of_name(name or "")
        if model is not None:
            if path not in OWNERS[model] and (path, model) not in EXEMPT:
                found.append(f"{path}:{line} {what} of a {model} ({name}); only "
                             f"{', '.join(sorted(OWNERS[model]))} may")
        elif (name or "").lower().rsplit("_", 1)[-1] not in OTHER_MODELS \
                and path not in ALL_OWNERS \
                and name not in _models_with_status_elsewhere():
            found.append(f"{path}:{line} {what} through {name!r}: name it after its model "
                         "so that this test can tell whose status it is")
    return found


def _models_with_status_elsewhere() -> set[str]:
    """Model classes with a status field that no owner guards (Organization, Dispute...)."""
    from django.apps import apps

    return {m.__name__ for m in apps.get_models()
            if any(f.name == "status" for f in m._meta.fields)} - OWNERS.keys()


def _modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in rel:
                yield rel, path.read_text()


def test_only_the_owner_modules_write_these_statuses():
    problems = [v for rel, source in _modules() for v in violations(rel, source)]
    assert problems == [], "\n".join(problems)


# --- The walker itself -------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    "referral.status = Referral.ACCEPTED",
    "won_referral.status, x = 'won', 1",
    "Referral.objects.filter(pk=1).update(status='won')",
    "Commission.objects.filter(x=1).exclude(y=2).update(status='paid')",
    "batch.payouts.filter(status='ready').update(status='cancelled')",
    "Commission.objects.bulk_update(rows, ['status', 'decided_at'])",
    "Payout.objects.create(batch=b, status='paid')",
    "Payout(batch=b, status='ready')",
    "PayoutBatch.objects.update_or_create(pk=1, defaults={'status': 'sent'})",
    "thing.status = 'x'",  # a name the test cannot place
])
def test_a_status_write_outside_its_owner_is_caught(code):
    assert violations("attribution/dispute_outcomes.py", code)


@pytest.mark.parametrize("code,path", [
    ("referral.status = 'won'", "referrals/services/lifecycle.py"),
    ("existing.status = 'needs_review'", "attribution/runner.py"),
    ("membership.status = Membership.ACTIVE", "accounts/services/members.py"),
    ("dispute.status = 'open'", "attribution/disputes.py"),
    ("Organization.objects.filter(pk=1).update(status='active')", "accounts/services/x.py"),
    ("Referral.objects.filter(status='accepted').update(expiry_warned_at=now)",
     "referrals/services/lifecycle.py"),
])
def test_owners_and_other_models_pass(code, path):
    assert violations(path, code) == []
