from django.db import migrations

# PostgreSQL only: the attribution runner's similar-names lookup (attribution/runner.py,
# `_similar_names`) as a nearest-neighbour search. A GiST trigram index can return a vendor's
# names in order of similarity (`ORDER BY normalized_name <-> name`) and stop after the LIMIT,
# where the GIN index of 0004 (referral_name_trgm_any) had to fetch and rank every name sharing
# trigrams with the deal's: tens of thousands of rows for a crowded vendor. btree_gist puts
# vendor_id in the same index. It replaces referral_name_trgm_any, which only the runner used
# (the conflict check has its own index on active registrations, referrals 0002).
# siglen: the trigram signature of inner index pages, in bytes (default 12). Names of one
# vendor share many trigrams; a longer signature lets the search skip more of the index.
FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    "CREATE INDEX IF NOT EXISTS referral_vendor_name_knn ON referrals_referral "
    "USING gist (vendor_id, normalized_name gist_trgm_ops(siglen=64)) WHERE status <> 'draft'",
    "DROP INDEX IF EXISTS referral_name_trgm_any",
]
BACKWARD = [
    "CREATE INDEX IF NOT EXISTS referral_name_trgm_any ON referrals_referral "
    "USING gin (normalized_name gin_trgm_ops) WHERE status <> 'draft'",
    "DROP INDEX IF EXISTS referral_vendor_name_knn",
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
    dependencies = [("attribution", "0004_candidate_lookup_indexes")]
    operations = [migrations.RunPython(forward, backward)]
