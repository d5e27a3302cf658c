from django.db import migrations

# The ledger is append-only at the database level too, like the audit log: corrections are new
# entries. TRUNCATE stays possible for test teardown.
GUARD = """
CREATE OR REPLACE FUNCTION payouts_ledgerentry_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payouts_ledgerentry_no_change
    BEFORE UPDATE OR DELETE ON payouts_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION payouts_ledgerentry_immutable();
"""
GUARD_REVERSE = """
DROP TRIGGER IF EXISTS payouts_ledgerentry_no_change ON payouts_ledgerentry;
DROP FUNCTION IF EXISTS payouts_ledgerentry_immutable();
"""
SQLITE_GUARD = [
    """CREATE TRIGGER payouts_ledgerentry_no_update BEFORE UPDATE ON payouts_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;""",
    """CREATE TRIGGER payouts_ledgerentry_no_delete BEFORE DELETE ON payouts_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;""",
]


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_GUARD:
            schema_editor.execute(statement)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_REVERSE)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS payouts_ledgerentry_no_update")
        schema_editor.execute("DROP TRIGGER IF EXISTS payouts_ledgerentry_no_delete")


class Migration(migrations.Migration):
    dependencies = [("payouts", "0001_initial")]
    operations = [migrations.RunPython(guard, unguard)]
