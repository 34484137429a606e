"""`mqkit replay` and `mqkit lag` on memory:// (Kafka's are in tests/kafka)."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from mqkit.cli import app
from mqkit.client import Client
from mqkit.memory import MemoryBroker
from mqkit.message import new_id

runner = CliRunner()


def test_replay_rewinds_a_memory_group_to_the_beginning() -> None:
    # Given a group that consumed three messages
    name = f"cli-replay-{new_id()[:8]}"
    url = f"memory://{name}"

    async def consume_all() -> None:
        async with Client(url) as client:
            await client.ensure_topic("orders", groups=["billing"])
            await client.publish_batch("orders", [1, 2, 3])
            stream = client.consume("orders", group="billing")
            for _ in range(3):
                await (await anext(stream)).ack()

    asyncio.run(consume_all())
    group = MemoryBroker.named(name).group("orders", "billing")
    assert group.depth() == 0
    # When the group is rewound from the command line
    result = runner.invoke(app, ["replay", "orders", "--group", "billing", "--url", url,
                                 "--beginning"])
    # Then all three wait again for the group
    assert result.exit_code == 0, result.output
    assert group.depth() == 3
    MemoryBroker.forget(name)


def test_replay_needs_exactly_one_starting_point() -> None:
    result = runner.invoke(app, ["replay", "orders", "--group", "g", "--url", "memory://"])
    assert result.exit_code == 2
    assert "exactly one of --offset, --timestamp or --beginning" in result.output


def test_lag_outside_kafka_says_where_it_applies() -> None:
    result = runner.invoke(app, ["lag", "orders", "--group", "g", "--url", "memory://"])
    assert result.exit_code == 2
    assert "kafka://" in result.output
