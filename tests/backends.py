"""The database backends the labelling tests run against: a SQLite file and PostgreSQL.

``JBO_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/DB`` names a server whose user may create
databases; every test gets a fresh database there, dropped afterwards. ``.ci/run`` starts a
throwaway PostgreSQL 15 server and sets it. Unset, the PostgreSQL cases are skipped on a
workstation but *fail* in CI (``CI=true``); set but unreachable, they fail everywhere.

Use ``from tests.backends import db_url`` in a test module and take ``db_url`` as an argument.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ENV = "JBO_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _postgres_server() -> str:
    base = os.environ.get(PG_ENV, "").strip()
    if not base:
        if _in_ci():
            pytest.fail(f"{PG_ENV} is not set in CI: .ci/run starts a PostgreSQL server and sets "
                        "it; see its log for why the server did not start")
        pytest.skip(f"no PostgreSQL server: set {PG_ENV}=postgresql://user@host:port/db "
                    "(e.g. `. .ci/postgres.sh && pg_start`) to run these cases")
    try:
        import psycopg2
    except ImportError:
        pytest.fail(f"{PG_ENV} is set but psycopg2 is missing: pip install -e '.[postgres]'")
    try:
        psycopg2.connect(base, connect_timeout=10).close()
    except psycopg2.Error as exc:
        pytest.fail(f"{PG_ENV}={base} is set but the server is unreachable: {exc}")
    return base


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file path, or a ``postgresql://`` URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "ref.db")
        return
    base = _postgres_server()  # skips (or fails in CI) before psycopg2 is needed
    import psycopg2

    name = f"jbo_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    parts = urlsplit(base)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def rows(url: str) -> list[dict]:
    """Key-value pairs (plus ``energy``) of every row, on either backend."""
    from jbo.data.store import connect

    db = connect(url, create=False)
    return [dict(r.key_value_pairs, energy=r.get("energy"))
            for r in db.select(include_data=False, columns=["id", "energy", "key_value_pairs"])]


def count(url: str) -> int:
    """Number of rows, 0 while the database does not exist yet (or is being created)."""
    from jbo.data.store import connect

    try:
        return connect(url, create=False).count()
    except Exception:
        return 0
