from django.db import migrations

# The audit log is append-only at the database level too: no UPDATE or DELETE gets through,
# whatever code (or person with a SQL prompt) tries. TRUNCATE stays possible for test teardown.
AUDIT_GUARD = """
CREATE OR REPLACE FUNCTION accounts_auditevent_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER accounts_auditevent_no_change
    BEFORE UPDATE OR DELETE ON accounts_auditevent
    FOR EACH ROW EXECUTE FUNCTION accounts_auditevent_immutable();
"""
AUDIT_GUARD_REVERSE = """
DROP TRIGGER IF EXISTS accounts_auditevent_no_change ON accounts_auditevent;
DROP FUNCTION IF EXISTS accounts_auditevent_immutable();
"""
SQLITE_GUARD = [
    """CREATE TRIGGER accounts_auditevent_no_update BEFORE UPDATE ON accounts_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
    """CREATE TRIGGER accounts_auditevent_no_delete BEFORE DELETE ON accounts_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
]


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDIT_GUARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_GUARD:
            schema_editor.execute(statement)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDIT_GUARD_REVERSE)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS accounts_auditevent_no_update")
        schema_editor.execute("DROP TRIGGER IF EXISTS accounts_auditevent_no_delete")


def create_default_network(apps, schema_editor):
    Network = apps.get_model("accounts", "Network")
    if not Network.objects.filter(is_default=True).exists():
        Network.objects.create(name="Referral Network", slug="default", is_default=True)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunPython(guard, unguard),
        migrations.RunPython(create_default_network, migrations.RunPython.noop),
    ]
