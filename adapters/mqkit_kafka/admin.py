"""Topic and group administration through Kafka's AdminClient, without blocking the loop.

- ``Admin.ensure``: create a topic, or check an existing one: partitions may grow, never
  shrink (``TopicMismatchError``); retention is aligned; the cleanup policy must match;
- ``seek_group``: move a stopped group to the beginning, the end, an offset or a time
  (``mqkit replay``);
- ``Admin.commit_offsets``: start a stopped group at given offsets per partition (where an
  exactly-once consumer's stored positions say to resume);
- ``consumer_lag``: committed offset, log end and lag per partition (``mqkit lag``).

Admin futures are awaited through ``asyncio.wrap_future``; the one blocking call
(``list_topics``) runs in the default executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

# confluent_kafka.admin re-exports these without __all__: mypy --strict flags the import.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from mqkit.errors import ConfigurationError, MqkitError
from mqkit.transport import TopicSpec
from mqkit.url import BrokerURL
from mqkit_kafka.config import KafkaConfig
from mqkit_kafka.errors import TopicMismatchError, UnknownTopicError, convert


@dataclass(frozen=True)
class PartitionLag:
    """One row of ``consumer_lag``. ``committed`` is None when the group never committed."""

    topic: str
    partition: int
    committed: int | None
    log_start: int
    log_end: int

    @property
    def lag(self) -> int:
        """Messages the group has not finished (from the log start when never committed)."""
        position = self.committed if self.committed is not None else self.log_start
        return max(0, self.log_end - position)


@dataclass(frozen=True)
class PartitionPosition:
    """One row of ``seek_group``: where the group was and where it now starts."""

    topic: str
    partition: int
    before: int | None
    after: int


class Admin:
    """Topic and group operations for one cluster. Safe to share between tasks."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        try:
            self._client = AdminClient(config.admin_conf())
        except KafkaException as exc:
            raise convert(exc, "creating the Kafka admin client",
                          secrets=config.secrets) from exc

    async def _await(self, future: Any, doing: str) -> Any:
        try:
            return await asyncio.wrap_future(future)
        except KafkaException as exc:
            raise convert(exc, doing, secrets=self.config.secrets) from exc
        finally:
            self._serve_logs()

    def _serve_logs(self) -> None:
        """librdkafka queues its log lines (``logger`` option) until a poll serves them."""
        self._client.poll(0)

    async def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the topics among ``topics`` that exist."""
        loop = asyncio.get_running_loop()
        timeout = self.config.connect_timeout
        try:
            meta = await loop.run_in_executor(
                None, lambda: self._client.list_topics(timeout=timeout)
            )
        except KafkaException as exc:
            raise convert(exc, f"reaching {self.config.bootstrap}",
                          secrets=self.config.secrets) from exc
        finally:
            self._serve_logs()
        wanted = set(topics)
        return {
            name: len(t.partitions)
            for name, t in meta.topics.items()
            if name in wanted and t.error is None
        }

    async def ensure(self, spec: TopicSpec, extra_topics: Iterable[str] = ()) -> int:
        """Make ``spec`` true; create ``extra_topics`` (retry topics) with the same partition
        count if missing. Returns the topic's partition count. Safe to call twice."""
        if spec.retention_messages is not None:
            raise ConfigurationError(
                "Kafka retains by time or size, not by message count: use retention_seconds "
                "or options={'retention.bytes': ...} instead of retention_messages"
            )
        extra = list(extra_topics)
        existing = await self.partitions([spec.name, *extra])
        current = existing.get(spec.name)
        if current is None:
            current = spec.partitions or self.config.partitions
            await self._create([(spec.name, current, _topic_config(spec))])
        else:
            await self._check(spec, current)
            if spec.partitions and spec.partitions > current:
                await self._await(
                    self._client.create_partitions([NewPartitions(spec.name, spec.partitions)])[
                        spec.name
                    ],
                    f"adding partitions to {spec.name!r}",
                )
                current = spec.partitions
        missing: list[tuple[str, int, dict[str, str]]] = [
            (name, current, {}) for name in extra if name not in existing
        ]
        if missing:
            await self._create(missing)
        return current

    async def _create(self, topics: list[tuple[str, int, dict[str, str]]]) -> None:
        new = [
            NewTopic(name, num_partitions=n, replication_factor=self.config.replication_factor,
                     config=conf)
            for name, n, conf in topics
        ]
        futures = self._client.create_topics(new, request_timeout=self.config.connect_timeout)
        for name, future in futures.items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created by someone else meanwhile
                raise convert(exc, f"creating topic {name!r}",
                              secrets=self.config.secrets) from exc
        await self._until_visible([t[0] for t in topics])

    async def _until_visible(self, names: list[str]) -> None:
        """Until the new topics show in the cluster metadata (a consumer that subscribes
        before that would not see them until its next metadata refresh)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout * 2
        while len(await self.partitions(names)) < len(names):
            if loop.time() > deadline:
                raise MqkitError(f"topics {names} were created but are not visible yet")
            await asyncio.sleep(0.02)  # metadata propagation has no notification to await

    async def _check(self, spec: TopicSpec, current: int) -> None:
        if spec.partitions and spec.partitions < current:
            raise TopicMismatchError(
                f"topic {spec.name!r} has {current} partitions; Kafka cannot shrink it to "
                f"{spec.partitions} (create a new topic instead)"
            )
        wanted = _topic_config(spec)
        if not wanted:
            return
        resource = ConfigResource(ResourceType.TOPIC, spec.name)
        entries: dict[str, Any] = await self._await(
            self._client.describe_configs([resource])[resource],
            f"reading the configuration of {spec.name!r}",
        )
        have = {name: entry.value for name, entry in entries.items()}
        policy = wanted.pop("cleanup.policy", None)
        if policy is not None and have.get("cleanup.policy") != policy:
            raise TopicMismatchError(
                f"topic {spec.name!r} has cleanup.policy={have.get('cleanup.policy')}, "
                f"the spec asks for {policy}: mqkit will not change a topic's cleanup policy"
            )
        changes = [
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in wanted.items()
            if have.get(name) != value
        ]
        if changes:
            alter = ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=changes)
            await self._await(
                self._client.incremental_alter_configs([alter])[alter],
                f"updating the configuration of {spec.name!r}",
            )

    # --- groups -----------------------------------------------------------------------
    async def committed(self, topic: str, group: str, partitions: int) -> dict[int, int | None]:
        request = [
            ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p) for p in range(partitions)]
            )
        ]
        result = await self._await(
            self._client.list_consumer_group_offsets(request)[group],
            f"reading the offsets of group {group!r}",
        )
        return {
            tp.partition: (tp.offset if tp.offset >= 0 else None)
            for tp in result.topic_partitions
        }

    async def offsets(self, topic: str, partitions: int, spec: OffsetSpec) -> dict[int, int]:
        query = {TopicPartition(topic, p): spec for p in range(partitions)}
        futures = self._client.list_offsets(query, request_timeout=self.config.connect_timeout)
        out: dict[int, int] = {}
        for tp, future in futures.items():
            info = await self._await(future, f"listing offsets of {topic!r}")
            out[tp.partition] = info.offset
        return out

    async def topic_partitions(self, topic: str) -> int:
        count = (await self.partitions([topic])).get(topic)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        return count

    async def lag(self, topic: str, group: str) -> list[PartitionLag]:
        n = await self.topic_partitions(topic)
        committed = await self.committed(topic, group, n)
        start = await self.offsets(topic, n, _earliest())
        end = await self.offsets(topic, n, _latest())
        return [
            PartitionLag(topic, p, committed.get(p), start[p], end[p]) for p in range(n)
        ]

    async def _alter_offsets(
        self, group: str, request: list[Any], patience: float | None = None
    ) -> None:
        """Commit offsets for a group without members. A member that just left can keep the
        group busy for a moment on the broker: retried for ``patience`` seconds
        (``connect_timeout`` by default)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.connect_timeout if patience is None else patience)
        while True:
            result = await asyncio.wrap_future(
                self._client.alter_consumer_group_offsets(request)[group]
            )
            failed = [tp.error for tp in result.topic_partitions if tp.error is not None]
            if not failed:
                return
            if failed[0].code() not in _GROUP_BUSY or loop.time() > deadline:
                raise KafkaException(failed[0])
            await asyncio.sleep(0.2)

    async def seek(
        self,
        topic: str,
        group: str,
        *,
        offset: int | None = None,
        timestamp: float | None = None,
        to: str | None = None,
    ) -> list[PartitionPosition]:
        """Commit a new position for a group that has no running member."""
        chosen = [x is not None for x in (offset, timestamp, to)]
        if sum(chosen) != 1:
            raise ConfigurationError("seek needs exactly one of offset, timestamp or to")
        n = await self.topic_partitions(topic)
        before = await self.committed(topic, group, n)
        start = await self.offsets(topic, n, _earliest())
        end = await self.offsets(topic, n, _latest())
        if to == "beginning":
            target = start
        elif to == "end":
            target = end
        elif to is not None:
            raise ConfigurationError(f"seek to must be 'beginning' or 'end', not {to!r}")
        elif timestamp is not None:
            found = await self.offsets(topic, n, OffsetSpec.for_timestamp(int(timestamp * 1000)))
            target = {p: (o if o >= 0 else end[p]) for p, o in found.items()}
        else:
            assert offset is not None
            if offset < 0:
                raise ConfigurationError("seek offset must be >= 0")
            target = {p: min(max(offset, start[p]), end[p]) for p in range(n)}
        request = [
            ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p, o) for p, o in target.items()]
            )
        ]
        try:
            await self._alter_offsets(group, request)
        except KafkaException as exc:
            error = convert(exc, f"moving group {group!r}", secrets=self.config.secrets)
            raise MqkitError(
                f"{error} (is a consumer of the group still running? stop it, or seek from "
                "inside it with transport.seek)"
            ) from exc
        return [PartitionPosition(topic, p, before.get(p), target[p]) for p in range(n)]


    async def clamp_offsets(self, topic: str, offsets: Mapping[int, int]) -> dict[int, int]:
        """``offsets`` (partition -> offset) moved into each partition's retained log, from
        its oldest retained offset to its end. ``UnknownTopicError`` if the topic does not
        exist, ``ConfigurationError`` for a partition it does not have or a negative offset."""
        n = await self.topic_partitions(topic)
        bad = sorted(p for p in offsets if not 0 <= p < n)
        if bad:
            raise ConfigurationError(f"topic {topic!r} has {n} partitions, not {bad}")
        if any(o < 0 for o in offsets.values()):
            raise ConfigurationError("offsets must be >= 0")
        if not offsets:
            return {}
        start = await self.offsets(topic, n, _earliest())
        end = await self.offsets(topic, n, _latest())
        return {p: min(max(o, start[p]), end[p]) for p, o in sorted(offsets.items())}

    async def commit_offsets(
        self, topic: str, group: str, offsets: Mapping[int, int]
    ) -> list[PartitionPosition] | None:
        """Commit ``offsets`` (partition -> the next offset to read, clamped as by
        ``clamp_offsets``) for ``group`` on ``topic``; other partitions keep their position.
        For a group with no member only: where the broker still counts a member (a running
        consumer, or a killed one whose session has not expired), nothing is committed and
        None is returned at once, so the caller can position its own member instead. Safe
        to call twice; raises as ``clamp_offsets`` does."""
        target = await self.clamp_offsets(topic, offsets)
        if not target:
            return []
        before = await self.committed(topic, group, await self.topic_partitions(topic))
        request = [
            ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p, o) for p, o in target.items()]
            )
        ]
        try:
            await self._alter_offsets(group, request, patience=0)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _GROUP_BUSY:
                return None
            raise convert(exc, f"committing offsets of group {group!r}",
                          secrets=self.config.secrets) from exc
        return [PartitionPosition(topic, p, before.get(p), o) for p, o in target.items()]


_GROUP_BUSY = {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS}


def _earliest() -> OffsetSpec:
    return OffsetSpec.earliest()  # type: ignore[no-untyped-call,no-any-return]


def _latest() -> OffsetSpec:
    return OffsetSpec.latest()  # type: ignore[no-untyped-call,no-any-return]


def _topic_config(spec: TopicSpec) -> dict[str, str]:
    conf: dict[str, str] = dict(spec.options)
    if spec.retention_seconds is not None:
        conf["retention.ms"] = str(int(spec.retention_seconds * 1000))
    if spec.compacted:
        conf["cleanup.policy"] = "compact"
    return conf


# --- entry points for the ``mqkit`` command line ------------------------------------------
async def seek_group(
    url: str,
    topic: str,
    group: str,
    *,
    offset: int | None = None,
    timestamp: float | None = None,
    to: str | None = None,
) -> list[PartitionPosition]:
    """``mqkit replay``: move ``group`` on ``topic`` to ``to`` ("beginning" / "end"), an
    ``offset`` (the same in every partition, clamped to the log) or the first message at or
    after ``timestamp`` (epoch seconds). The group must have no running member."""
    admin = Admin(KafkaConfig.from_url(BrokerURL.parse(url)))
    return await admin.seek(topic, group, offset=offset, timestamp=timestamp, to=to)


async def consumer_lag(url: str, topic: str, group: str) -> list[PartitionLag]:
    """``mqkit lag``: per partition, the group's committed offset, the log end and the lag."""
    admin = Admin(KafkaConfig.from_url(BrokerURL.parse(url)))
    return await admin.lag(topic, group)
