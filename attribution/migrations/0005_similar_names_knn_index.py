from django.db import migrations

# The name is historical: payouts 0001 depends on it, so it stays. A draft of this migration
# replaced the GIN index of 0004 (referral_name_trgm_any) with a GiST trigram index, btree_gist
# (vendor_id, normalized_name gist_trgm_ops(siglen=64)) WHERE status <> 'draft', for a
# nearest-neighbour lookup (ORDER BY normalized_name <-> name LIMIT 200). Measured with
# bench/attribution.py at 1,000,000 referrals it was no faster than the GIN lookup with
# look-alike names and 3.6 times slower with varied ones, whatever the signature length (12, 64
# or 256 bytes): the vendor's names share trigrams, so the signatures of the inner pages cover
# nearly every query and the search reads nearly the whole index (about 16,500 pages) even for
# LIMIT 5; it was also more than twice the size of the GIN index. So the runner keeps the GIN lookup (bench/README.md has
# the figures), and this migration only makes sure the schema is 0004's: the GIN index there,
# no GiST one. PostgreSQL only, like 0004; nothing to do on SQLite.
#
# A database that ran the draft keeps its GiST index and lacks the GIN one (migrations do not
# re-run); repair it by hand with FORWARD below.
FORWARD = [
    "CREATE INDEX IF NOT EXISTS referral_name_trgm_any ON referrals_referral "
    "USING gin (normalized_name gin_trgm_ops) WHERE status <> 'draft'",
    "DROP INDEX IF EXISTS referral_vendor_name_knn",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in FORWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("attribution", "0004_candidate_lookup_indexes")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
