"""Messages, codecs, the CloudEvents mapping and URL redaction."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from mqkit import headers as h
from mqkit.codec import (
    as_cloudevent,
    decode,
    encode,
    from_cloudevent_headers,
    message_from_cloudevent,
)
from mqkit.errors import ConfigurationError, DecodeError
from mqkit.message import Message, dead_letter_message, dlq_topic, new_id
from mqkit.url import BrokerURL, redact_options, redact_url


class Order(BaseModel):
    order_id: str
    amount: float


def test_message_is_immutable_and_gets_a_unique_id() -> None:
    a, b = Message("t", b"x"), Message("t", b"x")
    assert a.id != b.id
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.topic = "other"  # type: ignore[misc]


def test_ids_stay_unique_across_threads_and_pool_refills() -> None:
    # Eight threads take ids at once through many refills of the shared pool.
    def take(_: int) -> list[str]:
        return [new_id() for _ in range(5_000)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [i for chunk in pool.map(take, range(8)) for i in chunk]
    assert len(set(ids)) == len(ids) == 40_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids[:100])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent's pool now holds ids a child could inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.write(write, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {new_id() for _ in range(300)}
    assert len(child) == 10
    assert not child & parent


def test_conventional_headers_are_readable_as_properties() -> None:
    m = Message(
        "t", b"", headers={h.IDEMPOTENCY_KEY: "k", h.CORRELATION_ID: "c", h.CAUSATION_ID: "z"}
    )
    assert (m.idempotency_key, m.correlation_id, m.causation_id) == ("k", "c", "z")


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [(b"\x00\x01", "application/octet-stream"), ("héllo", "text/plain; charset=utf-8"),
     ({"a": [1, 2]}, "application/json"), (Order(order_id="o", amount=1.5), "application/json")],
)
def test_encode_picks_the_codec_from_the_payload(payload: Any, content_type: str) -> None:
    body, ct = encode(payload)
    assert ct == content_type
    target = type(payload) if not isinstance(payload, dict) else dict
    assert decode(body, ct, target) == payload


def test_decode_validates_against_a_model() -> None:
    body, ct = encode({"order_id": "o1", "amount": "2.5"})
    assert decode(body, ct, Order) == Order(order_id="o1", amount=2.5)
    with pytest.raises(DecodeError, match="does not match Order"):
        decode(b'{"order_id": 1}', ct, Order)


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(b"{nope", "application/json", dict)


def test_unencodable_payload_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot encode object"):
        encode(object())


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
))
def test_json_round_trips(value: Any) -> None:
    # str payloads are sent as text, so wrap every value in a list to test the JSON codec
    body, ct = encode([value])
    assert decode(body, ct, Any) == [value]


def test_cloudevents_binary_mode_round_trip() -> None:
    # Given a message mapped to a CloudEvent
    m = as_cloudevent(
        Message("orders", b'{"a":1}', key="o-1", headers={h.CONTENT_TYPE: "application/json"}),
        type="com.shop.order.created",
        source="/shop",
    )
    attrs = from_cloudevent_headers(m.headers)
    assert attrs["id"] == m.id and attrs["type"] == "com.shop.order.created"
    assert attrs["specversion"] == "1.0" and attrs["subject"] == "o-1"
    assert attrs["datacontenttype"] == "application/json"
    # When it is read back from the headers and body
    back = message_from_cloudevent("orders", m.headers, m.body)
    # Then id, key, time and body survive
    assert (back.id, back.key, back.body) == (m.id, "o-1", m.body)
    assert abs(back.timestamp - m.timestamp) < 1e-3


def test_cloudevent_missing_required_attributes_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="source, type"):
        from_cloudevent_headers({"ce-id": "1", "ce-specversion": "1.0"})


def test_dead_letter_copy_keeps_id_and_names_the_failure() -> None:
    m = Message("orders", b"x", key="k")
    letter = dead_letter_message(m, 3, "retries-exhausted", ValueError("boom"))
    assert letter.topic == "orders.dlq" == dlq_topic("orders") == dlq_topic("orders.dlq")
    assert letter.id == m.id and letter.key == "k"
    assert letter.headers[h.DLQ_ERROR_TYPE] == "ValueError"
    assert letter.headers[h.DLQ_ATTEMPTS] == "3"


@pytest.mark.parametrize(
    ("url", "secret"),
    [("amqp://guest:hunter2@127.0.0.1:5672/%2F", "hunter2"),
     ("kafka://h:9092?sasl.password=hunter2&acks=all", "hunter2"),
     ("nats://s3cr3ttoken@127.0.0.1:4222", "s3cr3ttoken"),
     ("sqs://127.0.0.1:5000?region=x&aws_secret_access_key=hunter2", "hunter2")],
)
def test_secrets_never_show_in_redacted_urls_or_reprs(url: str, secret: str) -> None:
    parsed = BrokerURL.parse(url)
    for text in (redact_url(url), str(parsed), repr(parsed)):
        assert secret not in text
        assert "***" in text or "BrokerURL(" in text


def test_redacted_url_keeps_what_helps_debugging() -> None:
    assert redact_url("amqp://guest:pw@10.0.0.1:5672/vh?heartbeat=30") == (
        "amqp://guest:***@10.0.0.1:5672/vh?heartbeat=30"
    )
    assert redact_options({"password": "x", "acks": "all"}) == {"password": "***", "acks": "all"}


def test_url_without_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a broker URL"):
        BrokerURL.parse("localhost:9092")


def test_multi_host_urls_parse() -> None:
    u = BrokerURL.parse("kafka://a:1,b:2")
    assert u.hosts == [("a", 1), ("b", 2)] and (u.host, u.port) == ("a", 1)


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000,
     b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x07os.path\x94."],
    ids=["empty", "invalid-utf8", "nesting-bomb", "pickle-bytes"],
)
def test_poison_bodies_are_decode_errors_never_crashes(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(body, "application/json", dict)
