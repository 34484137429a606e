import uuid

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402


def test_postgres_create_insert_select(postgres_url: str) -> None:
    table = sql.Identifier(f"smoke_{uuid.uuid4().hex[:12]}")

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(table)

    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        try:
            conn.execute(q("CREATE TABLE {} (id bigserial PRIMARY KEY, body text)"))
            conn.execute(q("INSERT INTO {} (body) VALUES (%s), (%s)"), ("a", "b"))
            conn.commit()
            rows = conn.execute(q("SELECT id, body FROM {} ORDER BY id")).fetchall()
            assert rows == [(1, "a"), (2, "b")]
        finally:
            conn.rollback()
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.commit()
