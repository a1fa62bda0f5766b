"""SQL files: migrations are ordered and named, queries are named once and all used."""

from __future__ import annotations

import re
from pathlib import Path

from emm_sdc.core import catalog

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_are_numbered_in_order() -> None:
    migs = catalog.migrations()
    assert [m.version for m in migs] == list(range(1, len(migs) + 1))
    for m in migs:
        assert "IF NOT EXISTS" in m.sql or "OR REPLACE" in m.sql  # idempotent by construction


def test_every_named_query_is_used_and_parameterised() -> None:
    code = "\n".join(p.read_text() for d in ("plugins", "tests", "bench") for p in (ROOT / d).rglob("*.py"))
    for name, sql in catalog.queries().items():
        assert f'"{name}"' in code, f"query {name} is never used"
        assert not re.search(r"\{[a-z_]+\}", sql), f"query {name} looks like a format string"
