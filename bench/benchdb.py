"""What every benchmark script shares: its own PostgreSQL database, created when missing."""

import sys
from urllib.parse import urlsplit


def ensure_database(url: str, force: bool) -> None:
    """Create the database named in `url` unless it exists. Refuses anything but PostgreSQL,
    and (without `force`) a database whose name does not say it is for benchmarks."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        sys.exit("The benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    name = parts.path.lstrip("/")
    if "bench" not in name and not force:
        sys.exit(f"Refusing to seed {name!r}: use a database named *bench* (or --force).")
    conninfo = dict(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                    user=parts.username or "postgres", dbname="postgres")
    if parts.password:
        conninfo["password"] = parts.password
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"Created database {name}.", file=sys.stderr, flush=True)
