"""``KafkaTransport``: the publisher, subscriptions and admin of one cluster, behind
mqkit's ``Transport`` and ``Replayable`` protocols, and ``PartitionSeek`` (start a group at
offsets per partition, for ``mqkit.eventsourcing.exactly_once``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from mqkit.errors import ConfigurationError, ConnectionFailed, MessageTooLarge, PublishError
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL
from mqkit_kafka.admin import Admin
from mqkit_kafka.config import KafkaConfig, retry_topic
from mqkit_kafka.errors import UnknownTopicError
from mqkit_kafka.publisher import Publisher
from mqkit_kafka.subscriber import StartOffsets, Subscription

log = logging.getLogger("mqkit.kafka.transport")


class KafkaTransport:
    """The ``kafka://`` transport. See the package docstring for URL, features and limits.

    ``connect`` and ``close`` are safe to call twice; ``publish`` and ``subscribe`` may be
    used from many tasks of one event loop.
    """

    releases_unsettled_on_close = True
    """Closing a subscription leaves unsettled offsets uncommitted: they come back."""

    def __init__(self, url: BrokerURL | str, **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.url = parsed
        self.config = KafkaConfig.from_url(parsed, **options)
        self.capabilities = Capabilities(
            at_least_once=True,
            persistent=True,
            retains_unconsumed=True,
            ordered_by_key=True,
            consumer_groups=True,
            native_delay=True,
            native_dead_letter=False,
            replay=True,
            transactions=False,
            request_reply=False,
            wildcards=False,
            max_message_bytes=self.config.max_message_bytes,
        )
        self.publisher = Publisher(self.config.producer_conf(), self.config.secrets)
        self._admin: Admin | None = None
        self._subscriptions: list[Subscription] = []
        self._ensured: dict[str, int] = {}
        self._starts: dict[tuple[str, str], StartOffsets] = {}
        self._connected = False

    def __repr__(self) -> str:
        return f"<KafkaTransport {self.url.safe()}>"

    @property
    def admin(self) -> Admin:
        if self._admin is None:
            self._admin = Admin(self.config)
        return self._admin

    async def connect(self) -> None:
        """Reach the cluster (within ``connect_timeout``) and start the producer."""
        if self._connected:
            return
        try:
            await self.admin.partitions(())
        except ConnectionFailed as exc:
            raise ConnectionFailed(
                f"cannot reach Kafka at {self.url.safe()} within "
                f"{self.config.connect_timeout:g}s: {exc}"
            ) from exc
        self.publisher.start()
        self._connected = True

    async def close(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(s.aclose() for s in subscriptions), return_exceptions=True)
        if self._connected:
            self._connected = False
            await self.publisher.close()
        # Dropping the AdminClient closes its broker connections (it has no close()).
        self._admin = None

    async def publish(self, messages: Sequence[Message]) -> None:
        """Returns once every message was written with acks=all; see ``Publisher.publish``."""
        self._check(messages)
        await self.publisher.publish(messages)

    async def publish_partitions(self, messages: Sequence[Message]) -> list[int]:
        """Like ``publish``, and returns the partition each message was written to."""
        self._check(messages)
        return await self.publisher.publish(messages, partitions=True)

    def _check(self, messages: Sequence[Message]) -> None:
        """Connected, and every message within the size limit before any is sent."""
        if not self._connected:
            raise PublishError("the Kafka transport is not connected")
        limit = self.config.max_message_bytes
        for m in messages:
            if m.size > limit:
                raise MessageTooLarge(
                    f"message {m.id} to {m.topic!r} is {m.size} bytes; kafka:// accepts at "
                    f"most {limit}"
                )

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        """A member of ``group`` on ``topic`` (and its retry topic). It joins the group on its
        first iteration; ``UnknownTopicError`` if the topic does not exist."""
        return self.subscription(topic, group, prefetch=prefetch)

    def subscription(
        self, topic: str, group: str, *, prefetch: int = 10, **consumer_conf: Any
    ) -> Subscription:
        """``subscribe`` with its concrete type (``take``, ``seek``, ``wait_assigned``)."""
        retry = retry_topic(topic, group)

        async def prepare() -> None:
            if retry in self._ensured and topic in self._ensured:
                return
            count = (await self.admin.partitions([topic])).get(topic)
            if count is None:
                raise UnknownTopicError(
                    f"cannot subscribe to {topic!r}: the topic does not exist "
                    "(create it with ensure_topic first)"
                )
            await self.admin.ensure(TopicSpec(topic), [retry])
            self._ensured[topic] = self._ensured[retry] = count

        start = self._starts.setdefault((topic, group), StartOffsets(topic))
        sub = Subscription(
            self.config, self.publisher, topic, retry, group, prefetch, prepare,
            self._forget, consumer_conf, start,
        )
        self._subscriptions.append(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    async def ensure_topic(self, spec: TopicSpec) -> None:
        """Create or check ``spec`` (see ``Admin.ensure``) and the retry topic of each group.

        Plain specs already ensured by this transport are not checked again."""
        retries = [retry_topic(spec.name, g) for g in spec.groups]
        plain = spec == TopicSpec(spec.name, groups=spec.groups)
        if plain and spec.name in self._ensured and all(r in self._ensured for r in retries):
            return
        count = await self.admin.ensure(spec, retries)
        for name in (spec.name, *retries):
            self._ensured[name] = count

    async def seek(
        self, topic: str, group: str, *, offset: int | None = None, timestamp: float | None = None
    ) -> None:
        """Replay: move ``group`` on ``topic`` to ``offset`` (in every partition) or to
        ``timestamp``. Where this transport runs members of the group, they move the
        partitions they own; otherwise the stopped group's committed offsets are moved."""
        local = [s for s in self._subscriptions if s.topic == topic and s.group == group]
        if local:
            await asyncio.gather(*(s.seek(offset=offset, timestamp=timestamp) for s in local))
            return
        await self.admin.seek(topic, group, offset=offset, timestamp=timestamp)

    async def seek_partitions(self, topic: str, group: str, offsets: Mapping[int, int]) -> None:
        """Start ``group`` on ``topic`` at ``offsets`` (partition -> the next offset to read);
        partitions not named keep their position.

        - Where this transport runs started members of the group, they move the partitions
          they own (committed before this returns); partitions owned elsewhere are left.
        - Otherwise, for a group with no member, the offsets are committed through the admin
          API (clamped to the retained log) before anyone subscribes.
        - Where the broker still counts a member elsewhere (running, or killed and not yet
          expired), the offsets are kept instead: this transport's next member of the group
          begins each partition there when first assigned it, and commits that position.

        Returns once the offsets are committed or kept; safe to call twice (the last call
        wins). ``UnknownTopicError`` if the topic does not exist, ``ConfigurationError`` for
        a negative offset or a partition the topic does not have."""
        wanted = {int(p): int(o) for p, o in offsets.items()}
        if any(o < 0 for o in wanted.values()):
            raise ConfigurationError("seek_partitions offsets must be >= 0")
        if not wanted:
            return
        live = [
            s for s in self._subscriptions if s.topic == topic and s.group == group and s.started
        ]
        if live:
            await asyncio.gather(*(s.seek_partitions(wanted) for s in live))
            return
        start = self._starts.setdefault((topic, group), StartOffsets(topic))
        if await self.admin.commit_offsets(topic, group, wanted) is not None:
            start.take((topic, p) for p in wanted)  # committed: nothing left to apply
            return
        clamped = await self.admin.clamp_offsets(topic, wanted)
        log.info("group %r still has a member on the broker: %s will start at %s when "
                 "assigned", group, topic, clamped)
        start.put(clamped)
