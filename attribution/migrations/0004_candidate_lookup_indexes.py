from django.db import migrations

# PostgreSQL-only indexes for the attribution runner's candidate lookups (see
# attribution/runner.py and bench/attribution.py). Every non-draft referral of the vendor can be
# a candidate (rejected, withdrawn and expired ones lose with a reason), so the conflict check's
# partial indexes on active registrations (referrals 0002 and the model's Meta) do not serve
# them: without these the lookups are sequential scans of the referral table. The equality
# lookup by domain is served by referral_domain_prefix (referrals 0004).
FORWARD = [
    "CREATE INDEX IF NOT EXISTS referral_vendor_name_any ON referrals_referral "
    "(vendor_id, normalized_name) WHERE status <> 'draft'",
    "CREATE INDEX IF NOT EXISTS referral_name_trgm_any ON referrals_referral "
    "USING gin (normalized_name gin_trgm_ops) WHERE status <> 'draft'",
]
BACKWARD = [
    "DROP INDEX IF EXISTS referral_vendor_name_any",
    "DROP INDEX IF EXISTS referral_name_trgm_any",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in FORWARD:
            schema_editor.execute(statement, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("attribution", "0003_dispute_disputemessage_disputeevidence_and_more"),
        ("referrals", "0004_list_indexes"),
    ]
    operations = [migrations.RunPython(forward, backward)]
