"""Broker-free units: murmur2 against Java, offset tracking, URL options and redaction."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqkit.errors import ConfigurationError
from mqkit.url import BrokerURL
from mqkit_kafka import KafkaTransport, java_partition, murmur2, retry_topic
from mqkit_kafka.config import KafkaConfig
from mqkit_kafka.headers import ID, decode_record
from mqkit_kafka.offsets import PartitionOffsets

# Values from Kafka's own UtilsTest.testMurmur2 (the Java client).
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items())
def test_murmur2_matches_the_java_client(key: str, expected: int) -> None:
    assert murmur2(key.encode()) == expected


def test_java_partition_is_positive_murmur2_mod_n() -> None:
    # toPositive(-973932308) % 7, computed the Java way
    assert java_partition("21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert all(0 <= java_partition(f"k{i}", 5) < 5 for i in range(100))


def test_offsets_commit_only_the_finished_prefix() -> None:
    # Given offsets 10..14 handed out
    part = PartitionOffsets()
    for offset in range(10, 15):
        part.add(offset)
    # When 12 and 13 finish first, nothing can be committed yet
    assert part.done(12) is False and part.done(13) is False
    assert part.committable is None
    # Then finishing 10 commits up to 11; finishing 11 jumps past 12 and 13
    assert part.done(10) is True and part.committable == 11
    assert part.done(11) is True and part.committable == 14
    assert part.unfinished == 1


def test_offsets_must_be_added_in_order() -> None:
    part = PartitionOffsets()
    part.add(5)
    with pytest.raises(ValueError):
        part.add(5)


def test_url_options_split_between_mqkit_librdkafka_and_sides() -> None:
    url = BrokerURL.parse(
        "kafka://app:s3cret@h1:9093,h2?partitions=6&security.protocol=SASL_SSL"
        "&producer.linger.ms=20&consumer.fetch.wait.max.ms=50"
    )
    config = KafkaConfig.from_url(url)
    assert config.bootstrap == "h1:9093,h2:9092"
    assert config.partitions == 6
    assert config.producer_conf()["linger.ms"] == "20"
    assert config.consumer_conf("g")["fetch.wait.max.ms"] == "50"
    assert config.common["security.protocol"] == "SASL_SSL"
    assert config.common["sasl.username"] == "app"
    assert config.producer_conf()["enable.idempotence"] is True
    assert config.producer_conf()["acks"] == "all"
    assert config.producer_conf()["partitioner"] == "murmur2_random"


def test_secrets_never_show_in_reprs() -> None:
    transport = KafkaTransport(
        BrokerURL.parse("kafka://app:s3cret@h1:9093?sasl.password=s3cret&ssl.key.password=k3y")
    )
    shown = repr(transport) + repr(transport.config) + str(transport.url)
    assert "s3cret" not in shown and "k3y" not in shown


def test_unknown_option_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown kafka:// option 'partitons'"):
        KafkaConfig.from_url(BrokerURL.parse("kafka://h:9092?partitons=3"))


def test_retry_topic_is_per_group_and_a_legal_kafka_name() -> None:
    assert retry_topic("orders", "billing") == "orders.mqkit-retry.billing"
    assert retry_topic("orders", "a b/c") == "orders.mqkit-retry.a_b_c"
    assert len(retry_topic("t" * 240, "g" * 100)) <= 249


def test_offset_runs_commit_only_the_finished_prefix() -> None:
    # Given runs 10..14 and 20..21 fetched (a gap, as compaction or transactions leave)
    part = PartitionOffsets()
    part.add_run([10, 11, 12, 13, 14])
    part.add_run([20, 21])
    # When a later run finishes first, nothing can be committed yet
    assert part.done_many([12, 13]) is False and part.committable is None
    # Then finishing the head commits through everything finished behind it
    assert part.done_many([10, 11]) is True and part.committable == 14
    assert part.done_many([14, 20]) is True and part.committable == 21
    assert part.unfinished == 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_offsets_settled_in_any_chunks_commit_exactly_the_finished_prefix(
    data: st.DataObject,
) -> None:
    # Given strictly increasing offsets with gaps, fetched in runs
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=40))
    fetched = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    cuts = data.draw(st.sets(st.integers(1, max(1, len(fetched) - 1)))) - {len(fetched)}
    chunks = [fetched[a:b] for a, b in pairwise([0, *sorted(cuts), len(fetched)])]
    part = PartitionOffsets()
    for chunk in chunks:
        # Gap-free runs may come as a range (the subscriber's usual run) or as a list
        part.add_run(_maybe_range(chunk, data.draw(st.booleans())))
    # When they are settled in slices of any size, in any order (one by one or together)
    pieces: list[list[int]] = []
    for chunk in chunks:
        at = 0
        while at < len(chunk):
            size = data.draw(st.integers(1, len(chunk) - at))
            pieces.append(chunk[at : at + size])
            at += size
    order = data.draw(st.permutations(pieces))
    finished: set[int] = set()
    for piece in order:
        if len(piece) == 1 and data.draw(st.booleans()):
            part.done(piece[0])
        else:
            part.done_many(_maybe_range(piece, data.draw(st.booleans())))
        finished.update(piece)
        # Then the commit point is one past the longest finished prefix, never further
        prefix = 0
        while prefix < len(fetched) and fetched[prefix] in finished:
            prefix += 1
        expected = fetched[prefix - 1] + 1 if prefix else None
        assert part.committable == expected
        assert part.unfinished == len(fetched) - len(finished)


def _maybe_range(offsets: list[int], as_range: bool) -> Sequence[int]:
    gap_free = offsets == list(range(offsets[0], offsets[-1] + 1))
    return range(offsets[0], offsets[-1] + 1) if as_range and gap_free else offsets


@pytest.mark.parametrize(("before", "run"), [
    ([], [4, 3]), ([], [1, 2, 2, 5]), ([], [1, 1, 3]), ([7], [7, 8]), ([7], [5, 9]),
    ([7], range(7, 9)), ([], range(1, 9, 2)),
])
def test_offset_runs_must_strictly_increase(before: list[int], run: Sequence[int]) -> None:
    part = PartitionOffsets()
    part.add_run(before)
    with pytest.raises(ValueError):
        part.add_run(run)


def test_the_rebalance_timeout_follows_revoke_timeout() -> None:
    # max.poll.interval.ms is also how long a JoinGroup may wait for members to rejoin:
    # librdkafka's 300 s would let a returning member wait minutes after a broker freeze.
    default = KafkaConfig.from_url(BrokerURL.parse("kafka://h:9092")).consumer_conf("g")
    assert default["max.poll.interval.ms"] == 45_000
    assert default["max.poll.interval.ms"] >= default["session.timeout.ms"]
    slow = KafkaConfig.from_url(BrokerURL.parse("kafka://h:9092?revoke_timeout=60"))
    # A revocation may block the consumer thread revoke_timeout + 5 s: the bound stays above.
    assert slow.consumer_conf("g")["max.poll.interval.ms"] == 95_000
    overridden = KafkaConfig.from_url(
        BrokerURL.parse("kafka://h:9092?consumer.max.poll.interval.ms=120000")
    )
    assert overridden.consumer_conf("g")["max.poll.interval.ms"] == "120000"


class _Record:
    """What decode_record reads of a confluent_kafka.Message (not constructible in Python)."""

    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def value(self) -> bytes:
        return b"body"

    def key(self) -> bytes:
        return b"k"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


@pytest.mark.parametrize(("headers", "message_id", "others"), [
    ([(ID, b"abc")], "abc", {}),  # what mqkit publishes: the id alone
    ([(ID, b"")], "t:3:7", {}),  # an empty id falls back to the record's position
    ([("a", b"1"), (ID, b"x")], "x", {"a": "1"}),
    ([("a", b"1")], "t:3:7", {"a": "1"}),
    (None, "t:3:7", {}),
])
def test_a_record_decodes_its_id_and_headers(
    headers: list[tuple[str, bytes]] | None, message_id: str, others: dict[str, str]
) -> None:
    message, attempt = decode_record(_Record(headers), "t", 3, 7, retry_copy=False)
    assert (message.id, dict(message.headers), attempt) == (message_id, others, 1)
    assert (message.topic, message.body, message.key, message.timestamp) == (
        "t", b"body", "k", 1_700_000_000.0,
    )
