"""Pure mappings: topics and patterns to NATS subjects, the header codec. No broker needed."""

from __future__ import annotations

import pytest

from mqkit.errors import ConfigurationError
from mqkit.message import Message
from mqkit_nats.headers import decode_message, encode_headers, msg_id_for
from mqkit_nats.subjects import consumer_name, filters, stream_name, subject


def test_star_maps_to_one_token_and_trailing_hash_to_prefix_plus_gt() -> None:
    assert filters("orders.*") == ["orders.*"]
    assert filters("orders.#") == ["orders", "orders.>"]
    assert filters("#") == [">"]
    assert filters("a.*.c.#") == ["a.*.c", "a.*.c.>"]


@pytest.mark.parametrize("pattern", ["a.#.b", "#.a", "a..b", "a b", "a.>"])
def test_a_pattern_nats_cannot_express_is_a_clear_error(pattern: str) -> None:
    with pytest.raises(ConfigurationError):
        filters(pattern)


def test_publishing_to_a_pattern_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pattern"):
        subject("orders.*")


def test_stream_and_consumer_names_are_legal_and_distinct() -> None:
    names = {stream_name(t) for t in ("a.b", "a_b", "a.*", "a.#")}
    assert len(names) == 4
    assert all("." not in n and "*" not in n for n in names)
    assert consumer_name("mqkit.dlq") != consumer_name("mqkit_dlq")


def test_headers_round_trip_including_newlines_spaces_and_unicode() -> None:
    # Given a message whose header values NATS could not carry raw
    sent = Message(
        topic="t",
        body=b"x",
        key=" spaced key ",
        headers={"x-tb": "line 1\r\nline 2", "x-pad": "  pad ", "x-uni": "Zoë 🚀", "x-empty": ""},
    )
    # When it is encoded then decoded (the server keeps header values as they are)
    wire = encode_headers(sent, msg_id="k-1")
    got = decode_message("t", b"x", wire)
    # Then everything is as sent, and raw readers see plain values where possible
    assert (got.id, got.key, got.timestamp) == (sent.id, sent.key, sent.timestamp)
    assert dict(got.headers) == dict(sent.headers)
    assert wire["x-uni"] == "Zoë 🚀" and wire["Nats-Msg-Id"] == "k-1"
    assert all("\n" not in v for v in wire.values())


def test_msg_id_is_the_idempotency_key_unless_told_otherwise() -> None:
    m = Message(topic="t", body=b"", headers={"idempotency-key": "pay-1"})
    assert msg_id_for(m, "idempotency-key") == "pay-1"
    assert msg_id_for(m, "message-id") == m.id
    assert msg_id_for(Message(topic="t", body=b""), "idempotency-key") != "pay-1"
