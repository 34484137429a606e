"""Tests of one process must not share topics: a JetStream stream outlives the test using it.

The conformance suite runs JetStream twice in one process (``jetstream`` then
``jetstream-msgid``); if both runs got the same topic, the second would find the first run's
stream and durable consumer, and a replay from offset 0 would hand it both runs' messages.
"""

from __future__ import annotations

import contextlib

from mqkit.testing import conformance
from mqkit.testing.conformance import ClientFactory
from mqkit_nats import JetStreamTransport
from tests.nats.conftest import fresh_topic


def test_the_topic_fixture_gives_each_test_a_new_topic() -> None:
    # Given / When two tests of one process ask for a topic
    # Then they get different ones
    assert fresh_topic() != fresh_topic()


def test_the_conformance_suite_gives_each_test_a_new_topic() -> None:
    # Given / When two conformance tests of one process name their topic alike
    # Then they still get different ones
    assert conformance.topic_name("replay") != conformance.topic_name("replay")


async def test_replay_run_twice_in_one_process_sees_only_its_own_messages(
    jetstream_url: str,
) -> None:
    # Given the replay conformance test already ran in this process (the "jetstream" variant)
    # When it runs again, as the "jetstream-msgid" variant does
    # Then each run replays exactly its own ten messages
    separator = "&" if "?" in jetstream_url else "?"
    urls = (jetstream_url, f"{jetstream_url}{separator}msg_id=message-id")
    streams: set[str] = set()
    try:
        for url in urls:
            factory = ClientFactory(url, {"replay": True})
            try:
                await conformance.test_replay_from_an_offset(factory)
            finally:
                for client in factory.clients:
                    assert isinstance(client.transport, JetStreamTransport)
                    streams |= set(client.transport._streams.values())
                await factory.close()
    finally:
        # Only now: deleting the first run's stream before the second would hide a shared one
        await _delete_streams(jetstream_url, streams)


async def _delete_streams(url: str, streams: set[str]) -> None:
    transport = JetStreamTransport(url)
    await transport.connect()
    try:
        for stream in streams:
            with contextlib.suppress(Exception):
                await transport.js.delete_stream(stream)
    finally:
        await transport.close()
