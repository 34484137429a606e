"""PostgreSQL helpers shared by the exactly-once tests (the ``effects`` fixture is in
conftest.py)."""

from __future__ import annotations

import psycopg


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
