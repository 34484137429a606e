"""``mqkit replay`` and ``mqkit lag``: move a group in its topic, and see how far behind it is.

Replay works on every transport that can rewind a group (``Replayable``: memory, Kafka,
JetStream). On Kafka a stopped group is moved through the admin API; lag is Kafka's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from mqkit.cli_common import Url, _fail, _out, _run, _with_client
from mqkit.client import Client
from mqkit.transport import Replayable

Group = Annotated[str, typer.Option("--group", "-g", help="The consumer group.")]


def _timestamp(value: str | None, url: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        _fail(f"--timestamp must be Unix seconds or ISO 8601, got {value!r}", url, code=2)


def replay(
    topic: str,
    group: Group,
    url: Url = "memory://",
    offset: Annotated[int | None, typer.Option(help="Start again at this offset.")] = None,
    timestamp: Annotated[
        str | None, typer.Option(help="Start at the first message at or after this time.")
    ] = None,
    beginning: Annotated[bool, typer.Option("--beginning", help="Start from the start.")] = False,
) -> None:
    """Rewind GROUP on TOPIC to an offset, a time, or the beginning."""
    when = _timestamp(timestamp, url)
    chosen = [offset is not None, when is not None, beginning].count(True)
    if chosen != 1:
        _fail("give exactly one of --offset, --timestamp or --beginning", url, code=2)
    if url.startswith("kafka://"):
        _replay_kafka(url, topic, group, offset, when, beginning)
        return

    async def move(client: Client) -> None:
        transport = client.transport
        if not isinstance(transport, Replayable):
            _fail(f"{client.url.scheme}:// cannot rewind a group (no replay)", url, code=2)
        await transport.seek(topic, group, offset=0 if beginning else offset, timestamp=when)

    _run(url, lambda: _with_client(url, move))
    _out().print(f"{group} on {topic} rewound")


def _replay_kafka(
    url: str, topic: str, group: str, offset: int | None, when: float | None, beginning: bool
) -> None:
    from mqkit_kafka.admin import seek_group  # the kafka extra: imported only for kafka://

    rows: Any = _run(
        url,
        lambda: seek_group(
            url, topic, group, offset=offset, timestamp=when, to="beginning" if beginning else None
        ),
    )
    table = Table("partition", "before", "after", title=f"{group} on {topic}")
    for row in rows:
        table.add_row(str(row.partition), str(row.before), str(row.after))
    _out().print(table)


def lag(topic: str, group: Group, url: Url = "memory://") -> None:
    """Per partition: GROUP's committed offset on TOPIC, the log end, and the lag (Kafka)."""
    if not url.startswith("kafka://"):
        _fail("lag is reported for kafka:// (other brokers: see their own queue depth)", url, 2)
    from mqkit_kafka.admin import consumer_lag

    rows: Any = _run(url, lambda: consumer_lag(url, topic, group))
    table = Table(
        "partition", "committed", "log start", "log end", "lag", title=f"{group} on {topic}"
    )
    total = 0
    for row in rows:
        total += row.lag
        table.add_row(
            str(row.partition), str(row.committed), str(row.log_start), str(row.log_end),
            str(row.lag),
        )
    _out().print(table)
    _out().print(f"total lag: {total}")
