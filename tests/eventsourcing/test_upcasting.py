"""Upcasters run on read, chained, and never rewrite what is stored."""

from __future__ import annotations

from typing import Any

import pytest

from mqkit.eventsourcing import (
    NO_STREAM,
    Event,
    EventTypes,
    NewEvent,
    UpcastError,
    Upcasters,
)


class OrderCreated(Event):
    schema_version = 3
    subtotal: int
    tax: int
    currency: str


def seed_upcasters() -> Upcasters:
    upcasters = Upcasters()

    @upcasters.register("OrderCreated", 1)
    def price_becomes_subtotal_and_tax(data: dict[str, Any]) -> dict[str, Any]:
        data["subtotal"] = data.pop("price")
        data["tax"] = 0
        return data

    @upcasters.register("OrderCreated", 2)
    def currency_defaults_to_eur(data: dict[str, Any]) -> dict[str, Any]:
        data.setdefault("currency", "EUR")
        return data

    return upcasters


async def test_a_v1_order_is_read_as_v3_through_the_chain(any_store: Any) -> None:
    # given an OrderCreated stored at version 1 with a price
    await any_store.append(
        "order-1", [NewEvent("OrderCreated", {"price": 120}, schema_version=1)], NO_STREAM
    )
    # when it is read, upcast and decoded
    (stored,) = await any_store.read_stream("order-1")
    event = EventTypes([OrderCreated]).decode(seed_upcasters().upcast(stored))
    # then v1 -> v2 split the price into subtotal + tax 0, and v2 -> v3 added the currency
    assert event == OrderCreated(subtotal=120, tax=0, currency="EUR")


async def test_upcasting_leaves_the_stored_event_unchanged(any_store: Any) -> None:
    # given a v1 event that has been upcast once
    await any_store.append(
        "order-2", [NewEvent("OrderCreated", {"price": 7}, schema_version=1)], NO_STREAM
    )
    (stored,) = await any_store.read_stream("order-2")
    seed_upcasters().upcast(stored)
    # when the store is read again
    (again,) = await any_store.read_stream("order-2")
    # then both the object read earlier and the stored row are still v1 with a price
    assert (stored.schema_version, dict(stored.data)) == (1, {"price": 7})
    assert (again.schema_version, dict(again.data)) == (1, {"price": 7})


async def test_an_event_with_no_path_to_its_class_version_is_a_clear_error(
    any_store: Any,
) -> None:
    # given a v1 event and no upcasters
    await any_store.append(
        "order-3", [NewEvent("OrderCreated", {"price": 1}, schema_version=1)], NO_STREAM
    )
    (stored,) = await any_store.read_stream("order-3")
    # when it is decoded to the v3 class, then the error names both versions
    with pytest.raises(UpcastError, match="schema version 1 but OrderCreated is version 3"):
        EventTypes([OrderCreated]).decode(Upcasters().upcast(stored))
