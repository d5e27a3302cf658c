"""Inserting many new rows through PostgreSQL's COPY.

Django's `bulk_create` on PostgreSQL sends one `INSERT ... SELECT * FROM UNNEST(...)` whose
arrays psycopg quotes in Python, element by element: at a backfill's volume (thousands of
attributions, candidates and history rows per second) that quoting and the statement's
compilation cost more than the database's work. COPY streams the rows instead (psycopg formats
them in C). SQLite, the quickstart's database, gets `bulk_create`.
"""

import functools
import time

from django.db import connections

SEQUENCE_VALUES = "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)"


def copy_insert(objs, using: str = "default") -> list:
    """Insert `objs` (new instances of one model): primary keys are drawn from the table's
    sequence first and set on the instances, which are then saved as `bulk_create` leaves
    them (no signals, no `save()`). Values go through each field's `pre_save` and
    `get_db_prep_save`, as in any save. Returns the instances."""
    objs = list(objs)
    if not objs:
        return objs
    model = type(objs[0])
    connection = connections[using]
    if connection.vendor != "postgresql":
        return model._default_manager.using(using).bulk_create(objs, batch_size=1000)
    meta = model._meta
    fields = meta.concrete_fields
    with connection.cursor() as cursor:
        unnumbered = [obj for obj in objs if obj.pk is None]
        if unnumbered:
            cursor.execute(SEQUENCE_VALUES, [meta.db_table, meta.pk.column, len(unnumbered)])
            for obj, (pk,) in zip(unnumbered, cursor.fetchall(), strict=True):
                obj.pk = pk
        for obj in objs:  # foreign keys to instances saved since this one was made
            obj._prepare_related_fields_for_save(operation_name="copy_insert")
        rows = [[field.get_db_prep_save(field.pre_save(obj, True), connection)
                 for field in fields] for obj in objs]
        _execute_copy(connection, cursor, model, fields, rows)
    for obj in objs:
        obj._state.adding, obj._state.db = False, using
    return objs


def copy_rows(model, fields, rows, using: str = "default") -> int:
    """Insert rows given as tuples of values for `fields` (names; a foreign key by its
    attname, `..._id`), for new rows nobody needs back as instances (no keys are returned).
    Every column without a database default must be given: model defaults do not apply.
    Values go through their field's `get_db_prep_save`. Returns how many rows."""
    meta = model._meta
    fields = [meta.get_field(name) for name in fields]
    rows = list(rows)
    if not rows:
        return 0
    connection = connections[using]
    if connection.vendor != "postgresql":
        names = [field.attname for field in fields]
        model._default_manager.using(using).bulk_create(
            [model(**dict(zip(names, row, strict=True))) for row in rows], batch_size=1000)
        return len(rows)
    prepared = [[field.get_db_prep_save(value, connection)
                 for field, value in zip(fields, row, strict=True)] for row in rows]
    with connection.cursor() as cursor:
        _execute_copy(connection, cursor, model, fields, prepared)
    return len(rows)


def _execute_copy(connection, cursor, model, fields, rows) -> None:
    """COPY the rows (values of `fields`, prepared for the database) into the model's table,
    through the connection's execute wrappers and query log like any statement, so that
    whatever counts or logs queries (tests, benchmarks, debug tooling) sees it."""
    quote = connection.ops.quote_name
    sql = (f"COPY {quote(model._meta.db_table)} "
           f"({', '.join(quote(field.column) for field in fields)}) FROM STDIN")

    def copy(sql, params, many, context):
        with connection.wrap_database_errors, cursor.cursor.copy(sql) as stream:
            for row in rows:
                stream.write_row(row)

    run = copy
    context = {"connection": connection, "cursor": cursor}
    for wrapper in reversed(connection.execute_wrappers):
        run = functools.partial(wrapper, run)
    started = time.monotonic()
    run(sql, None, False, context)
    if connection.queries_logged:
        connection.queries_log.append({"sql": f"{sql} -- {len(rows)} rows",
                                       "time": f"{time.monotonic() - started:.3f}"})
