"""The saga log contract, on every backend: memory, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from mqkit.errors import ConfigurationError
from mqkit.saga import (
    LogEntry,
    Phase,
    SagaRecord,
    SagaState,
    SagaStore,
    UnknownSaga,
    open_saga_store,
)


def record(saga_id: str, data: object = None) -> SagaRecord:
    return SagaRecord(saga_id, "order", SagaState.RUNNING, data, 1.0, 1.0,
                      entries=[LogEntry(Phase.SAGA, "running", at=1.0)])


async def test_a_saga_reads_back_with_its_log_in_order(any_store: SagaStore) -> None:
    # Given a saga with two step transitions
    assert await any_store.create(record("s-1", {"order": "o-1", "n": [1, 2]}))
    await any_store.append("s-1", LogEntry(Phase.ACTION, "started", 0, "create", 1, at=2.0),
                           SagaState.RUNNING)
    await any_store.append("s-1", LogEntry(Phase.ACTION, "done", 0, "create", 1, {"id": 7},
                                           at=3.0), SagaState.COMPLETED)

    # When it is read back
    found = await any_store.get("s-1")

    # Then input, state and entries (numbered from 1) are as written
    assert found is not None
    assert found.data == {"order": "o-1", "n": [1, 2]}
    assert found.state is SagaState.COMPLETED
    assert [(e.seq, e.phase, e.status, e.detail) for e in found.entries] == [
        (1, Phase.SAGA, "running", None),
        (2, Phase.ACTION, "started", None),
        (3, Phase.ACTION, "done", {"id": 7}),
    ]


async def test_creating_an_existing_id_writes_nothing(any_store: SagaStore) -> None:
    assert await any_store.create(record("s-2", "first"))

    assert not await any_store.create(record("s-2", "second"))

    found = await any_store.get("s-2")
    assert found is not None and found.data == "first" and len(found.entries) == 1


async def test_list_filters_by_state(any_store: SagaStore) -> None:
    # Given one running and one stuck saga
    for saga_id in ("s-3", "s-4"):
        await any_store.create(record(saga_id))
    await any_store.append("s-4", LogEntry(Phase.SAGA, "stuck", at=5.0), SagaState.STUCK,
                           error="release failed")

    # When listing the stuck ones
    stuck = await any_store.list(states=[SagaState.STUCK])

    # Then only that one, with its error
    assert [(s.id, s.error) for s in stuck] == [("s-4", "release failed")]
    assert {s.id for s in await any_store.list(limit=None)} == {"s-3", "s-4"}


async def test_appending_to_an_unknown_saga_raises(any_store: SagaStore) -> None:
    with pytest.raises(UnknownSaga):
        await any_store.append("missing", LogEntry(Phase.SAGA, "running"), SagaState.RUNNING)


async def test_data_that_is_not_json_is_refused(any_store: SagaStore) -> None:
    with pytest.raises(ConfigurationError, match="JSON"):
        await any_store.create(record("s-5", {"when": object()}))


async def test_an_unknown_store_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no saga store"):
        await open_saga_store("mongodb://x:secret@host/db")


async def test_a_bad_table_name_is_refused(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        await open_saga_store("sqlite://", table="sagas; DROP TABLE x")
