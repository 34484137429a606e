"""The adapters' fast message constructor, and dead letters' de-duplication ids."""

from __future__ import annotations

import dataclasses

import pytest

from mqkit import headers as h
from mqkit.message import Message, dead_letter_message, received_message


def test_received_message_equals_the_dataclass_built_one() -> None:
    fields = dict(topic="t", body="héllo".encode(), key="k", headers={"a": "é"}, id="i-1",
                  timestamp=12.5)
    fast, slow = received_message(**fields), Message(**fields)
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert fast.size == slow.size == len("héllo".encode()) + len("a") + len("é".encode())
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.topic = "other"  # type: ignore[misc]


def test_each_group_dead_letters_a_message_under_its_own_dedup_id() -> None:
    message = Message(topic="orders", body=b"{}", id="m-1")
    letters = [
        dead_letter_message(message, 3, "exhausted", None, {h.DLQ_GROUP: group})
        for group in ("payments", "shipping")
    ]
    ids = {letter.headers[h.DEDUP_ID] for letter in letters}
    assert ids == {"m-1:payments", "m-1:shipping"}
    # the same group dead-lettering the same message again is a duplicate to drop
    again = dead_letter_message(message, 3, "exhausted", None, {h.DLQ_GROUP: "payments"})
    assert again.headers[h.DEDUP_ID] == "m-1:payments"
    # without a group the message id is the de-duplication id, as before
    assert dead_letter_message(message, 1, "permanent").headers[h.DEDUP_ID] == "m-1"
