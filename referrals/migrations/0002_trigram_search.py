from django.db import migrations

# Trigram indexes (PostgreSQL): the inbox's company search (`icontains` compiles to
# UPPER(col) LIKE UPPER('%q%')) and the submit-time fuzzy-name conflict check.
FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS referral_company_trgm ON referrals_referral "
    "USING gin (UPPER(company_name) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS referral_active_name_trgm ON referrals_referral "
    "USING gin (normalized_name gin_trgm_ops) WHERE status IN ('submitted', 'accepted')",
]
BACKWARD = [
    "DROP INDEX IF EXISTS referral_company_trgm",
    "DROP INDEX IF EXISTS referral_active_name_trgm",
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
    dependencies = [("referrals", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
