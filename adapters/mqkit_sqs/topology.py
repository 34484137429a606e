"""Names and creation of SNS topics, SQS queues, subscriptions, queue policies and redrive.

Naming: SNS topic and SQS queue names allow ``[A-Za-z0-9_-]`` (plus a ``.fifo`` suffix).
A topic keeps its name with ``.`` turned into ``_`` (so ``orders.created`` and
``orders_created`` name the same SNS topic); any other character is replaced by ``_`` and an
8-hex hash of the original name is appended so two such topics cannot collide. A group's
queue is ``<topic name>--<group name>`` (``sns`` mode) and a topic's queue is the topic name
(``queue`` mode), shortened with a hash past SQS's 80 characters.

FIFO: a topic ending in ``.fifo`` (or its dead-letter topic ``<name>.fifo.dlq``), or every
topic when the URL says ``fifo=true``, is an SNS FIFO topic with FIFO queues.

``ensure`` is idempotent: create calls of SNS and SQS return what exists; attributes are
set again each time, so a changed redrive count takes effect.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from mqkit.client import DLQ_GROUP
from mqkit.message import DLQ_SUFFIX, dlq_topic
from mqkit.transport import TopicSpec
from mqkit_sqs.config import SqsConfig
from mqkit_sqs.connection import Connection
from mqkit_sqs.errors import convert, error_code

FIFO_SUFFIX = ".fifo"
MAX_QUEUE_NAME = 80
MAX_TOPIC_NAME = 256
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _clean(name: str, limit: int) -> str:
    dotted = name.replace(".", "_")
    cleaned = _BAD.sub("_", dotted)
    if cleaned != dotted or len(cleaned) > limit:
        cleaned = f"{cleaned[: limit - 9]}-{_hash(name)}"
    return cleaned


class Topology:
    """Maps mqkit topics and groups to SNS/SQS names, ARNs and URLs; creates them."""

    def __init__(self, connection: Connection, config: SqsConfig) -> None:
        self._conn = connection
        self._config = config
        self._arn_prefix = ""
        self._queue_urls: dict[str, str] = {}
        self._queue_arns: dict[str, str] = {}
        self._ensured: set[tuple[str, tuple[str, ...], int]] = set()

    def set_identity(self, partition: str, account: str) -> None:
        """Where SNS ARNs point: ``arn:<partition>:sns:<region>:<account>:``."""
        self._arn_prefix = f"arn:{partition}:sns:{self._conn.region}:{account}:"

    # --- names ----------------------------------------------------------------------------
    def is_fifo(self, topic: str) -> bool:
        base = topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) else topic
        return self._config.fifo or base.endswith(FIFO_SUFFIX)

    def _base(self, topic: str) -> str:
        name = self._config.queue_prefix + topic
        return name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name

    def topic_name(self, topic: str) -> str:
        """The SNS topic name of ``topic``."""
        suffix = FIFO_SUFFIX if self.is_fifo(topic) else ""
        return _clean(self._base(topic), MAX_TOPIC_NAME - len(suffix)) + suffix

    def topic_arn(self, topic: str) -> str:
        return self._arn_prefix + self.topic_name(topic)

    def queue_name(self, topic: str, group: str) -> str:
        """The SQS queue of ``group`` on ``topic`` (the topic's only queue in ``queue`` mode)."""
        suffix = FIFO_SUFFIX if self.is_fifo(topic) else ""
        limit = MAX_QUEUE_NAME - len(suffix)
        if self._config.mode == "queue":
            return _clean(self._base(topic), limit) + suffix
        joined = f"{_clean(self._base(topic), MAX_TOPIC_NAME)}--{_clean(group, MAX_TOPIC_NAME)}"
        if len(joined) > limit:
            joined = f"{joined[: limit - 9]}-{_hash(topic + chr(0) + group)}"
        return joined + suffix

    # --- lookups --------------------------------------------------------------------------
    async def queue_url(self, topic: str, group: str) -> str:
        """The URL of ``group``'s queue; ``UnknownTopicError`` when it does not exist."""
        name = self.queue_name(topic, group)
        url = self._queue_urls.get(name)
        if url is None:
            try:
                reply = await self._conn.call(self._conn.sqs.get_queue_url, QueueName=name)
            except Exception as exc:
                raise convert(exc, f"looking up the queue of {topic!r}/{group!r}") from exc
            url = self._queue_urls[name] = str(reply["QueueUrl"])
        return url

    # --- creation -------------------------------------------------------------------------
    async def ensure(self, spec: TopicSpec) -> None:
        """Create ``spec``'s topic, its groups' queues, subscriptions, policies and redrive."""
        key = (spec.name, tuple(sorted(spec.groups)), self._receive_count(spec))
        if key in self._ensured:
            return
        try:
            await self._ensure(spec)
        except Exception as exc:
            raise convert(exc, f"creating topic {spec.name!r}") from exc
        self._ensured.add(key)

    def _receive_count(self, spec: TopicSpec) -> int:
        """maxReceiveCount: past the retry policy's attempts, so the core dead-letters first
        (with its error headers) and native redrive only catches consumers that died."""
        count = self._config.max_receive_count
        if count and spec.max_deliveries is not None:
            count = max(count, spec.max_deliveries + 1)
        return count

    async def _ensure(self, spec: TopicSpec) -> None:
        topic = spec.name
        groups = spec.groups or ((DLQ_GROUP,) if topic.endswith(DLQ_SUFFIX) else ())
        receive_count = self._receive_count(spec)
        if self._config.mode == "queue":
            await self._ensure_queue(topic, "", topic_arn=None, receive_count=receive_count)
            return
        attributes = {"FifoTopic": "true"} if self.is_fifo(topic) else {}
        reply = await self._conn.call(
            self._conn.sns.create_topic, Name=self.topic_name(topic), Attributes=attributes
        )
        arn = str(reply["TopicArn"])
        for group in groups:
            await self._ensure_queue(topic, group, topic_arn=arn, receive_count=receive_count)

    async def _ensure_queue(
        self, topic: str, group: str, topic_arn: str | None, receive_count: int | None = None
    ) -> None:
        name = self.queue_name(topic, group)
        url, arn = await self._create_queue(name, self.is_fifo(topic))
        attributes: dict[str, str] = {}
        if topic_arn is not None:
            attributes["Policy"] = json.dumps(_sns_may_send(arn, topic_arn))
        redrive = await self._redrive_target(topic)
        if redrive is not None:
            count = receive_count or self._config.max_receive_count
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": redrive, "maxReceiveCount": count}
            )
        if attributes:
            await self._conn.call(
                self._conn.sqs.set_queue_attributes, QueueUrl=url, Attributes=attributes
            )
        if topic_arn is not None:
            await self._conn.call(
                self._conn.sns.subscribe,
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            )

    async def _redrive_target(self, topic: str) -> str | None:
        """The ARN of the queue exhausted messages of ``topic`` move to, creating it."""
        if self._config.max_receive_count == 0 or topic.endswith(DLQ_SUFFIX):
            return None
        dlq = dlq_topic(topic)
        await self.ensure(TopicSpec(dlq, groups=(DLQ_GROUP,)))
        name = self.queue_name(dlq, DLQ_GROUP)
        return self._queue_arns[name]

    async def _create_queue(self, name: str, fifo: bool) -> tuple[str, str]:
        attributes = {"VisibilityTimeout": str(self._config.visibility_timeout)}
        if fifo:
            attributes["FifoQueue"] = "true"
        sqs = self._conn.sqs
        try:
            reply = await self._conn.call(sqs.create_queue, QueueName=name, Attributes=attributes)
            url = str(reply["QueueUrl"])
        except Exception as exc:
            # It exists with other attributes (say, another visibility timeout): keep it.
            if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = str((await self._conn.call(sqs.get_queue_url, QueueName=name))["QueueUrl"])
        self._queue_urls[name] = url
        arn = self._queue_arns.get(name)
        if arn is None:
            got = await self._conn.call(
                sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"]
            )
            arn = self._queue_arns[name] = str(got["Attributes"]["QueueArn"])
        return url, arn


def _sns_may_send(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    """The queue policy that lets one SNS topic deliver to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "mqkit-sns-" + _hash(topic_arn),
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
