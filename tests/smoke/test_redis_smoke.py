import uuid

import pytest

redis = pytest.importorskip("redis")


def test_redis_set_nx_ex(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"smoke:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "first", nx=True, ex=30) is True
        assert client.set(key, "second", nx=True, ex=30) is None  # NX: already there
        assert client.get(key) == b"first"
        assert 0 < client.ttl(key) <= 30
    finally:
        client.delete(key)
        client.close()
