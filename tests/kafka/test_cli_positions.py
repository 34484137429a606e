"""`mqkit lag` and `mqkit replay` against the real Kafka broker."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from mqkit.cli import app
from mqkit.client import Client
from mqkit.message import new_id

runner = CliRunner()


def test_lag_then_replay_from_the_command_line(kafka_url: str) -> None:
    # Given a group that consumed 3 of 5 messages on a fresh topic, then stopped
    topic, group = f"cli-lag-{new_id()[:10]}", f"cli-g-{new_id()[:10]}"

    async def setup() -> None:
        async with Client(kafka_url) as client:
            await client.ensure_topic(topic, groups=[group], partitions=1)
            await client.publish_batch(topic, range(5))
            stream = client.consume(topic, group=group)
            for _ in range(3):
                await (await anext(stream)).ack()
            await stream.aclose()

    asyncio.run(setup())
    # When lag is asked for, then it shows 2 behind
    result = runner.invoke(app, ["lag", topic, "--group", group, "--url", kafka_url])
    assert result.exit_code == 0, result.output
    assert "total lag: 2" in result.output
    # When the stopped group is rewound to the beginning, then all 5 are behind again
    result = runner.invoke(app, ["replay", topic, "--group", group, "--url", kafka_url,
                                 "--beginning"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["lag", topic, "--group", group, "--url", kafka_url])
    assert "total lag: 5" in result.output, result.output
