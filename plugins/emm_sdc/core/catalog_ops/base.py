"""Named queries, transactions and the base class of the catalog's mixins.

Works on any DB-API 2 connection with pyformat parameters (psycopg 3 or psycopg2, as the postgres
provider's hook returns). Queries live in ``include/sql/queries/*.sql``, in blocks headed
``-- name: <query name>``.

The named-query loader is a few lines of our own rather than aiosql: it keeps the hook's connection (and
its transaction) in our hands and adds no dependency.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from emm_sdc.core.settings import project_root

Row = dict[str, Any]

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class CatalogError(RuntimeError):
    """The catalog refused an operation (conflict, missing input, drifted migration)."""


def sql_dir() -> Path:
    return project_root() / "include" / "sql"


@cache
def queries(directory: Path | None = None) -> dict[str, str]:
    """All named queries under ``include/sql/queries``."""
    found: dict[str, str] = {}
    for path in sorted((directory or sql_dir() / "queries").glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        marks = list(_NAME_LINE.finditer(text))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = text[m.end() : end].strip()
            if m["name"] in found:
                raise CatalogError(f"{path}: query name {m['name']!r} defined twice")
            found[m["name"]] = body
    return found


def _rows(cur: Any) -> list[Row]:
    if cur.description is None:
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """Commit on success, roll back on any error; yields a cursor."""
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()


def run(cur: Any, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    """Execute a named query and return its rows as dicts."""
    cur.execute(queries()[name], dict(params or {}))
    return _rows(cur)


class QueryRunner:
    """Something that runs a named query and returns its rows (the catalog, or the API's pool)."""

    def query(self, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        raise NotImplementedError

    def _first(self, name: str, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = self.query(name, params)
        return rows[0] if rows else None

    def _new_id(self, name: str, params: Mapping[str, Any]) -> int:
        """The ``id`` an INSERT ... RETURNING id gave."""
        return int(self.query(name, params)[0]["id"])


class CatalogBase(QueryRunner):
    """Catalog operations over one DB-API connection: each :meth:`query` is its own transaction."""

    def __init__(self, conn: Any):
        self.conn = conn

    def query(self, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run one named query in its own transaction (for the catalog's own methods, tests and tools)."""
        with transaction(self.conn) as cur:
            return run(cur, name, params)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction over several named queries (``run(cur, name, params)``)."""
        with transaction(self.conn) as cur:
            yield cur
