"""boto3 clients and the threads their blocking calls run on.

boto3 blocks, so nothing here runs on the event loop: short calls (publish, delete, change
visibility, create) go through ``call`` to a bounded thread pool; long polls run on their
own daemon threads (see ``subscriber``) so a 20 s poll never holds a pool thread that a
publish needs, and never keeps the interpreter alive at exit. Receiving uses its own SQS
client, so long polls and publishes do not share a connection pool. boto3 clients are
thread-safe; resources and sessions are not, so only clients are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from mqkit_sqs import redaction
from mqkit_sqs.config import SqsConfig

T = TypeVar("T")
OPS_THREADS = 16
"""Threads for short calls: enough for a few concurrent publish batches, acks and nacks."""


class Connection:
    """The SNS, SQS and STS clients of one transport. ``open`` blocks; call it off the loop."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self.sns: Any = None
        self.sqs: Any = None
        self.sqs_receive: Any = None
        self.sts: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def open(self) -> None:
        """Create the clients (no network I/O). Safe to call twice."""
        if self.sqs is not None:
            return
        redaction.install()  # botocore's DEBUG records would show the credentials
        session = boto3.session.Session(region_name=self.config.region)
        short = Config(
            connect_timeout=self.config.connect_timeout,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=OPS_THREADS * 2,
        )
        poll = short.merge(Config(read_timeout=self.config.wait_time + 15))
        endpoint = self.config.endpoint_url
        self.sns = session.client("sns", endpoint_url=endpoint, config=short)
        self.sqs = session.client("sqs", endpoint_url=endpoint, config=short)
        self.sqs_receive = session.client("sqs", endpoint_url=endpoint, config=poll)
        self.sts = session.client(
            "sts", endpoint_url=endpoint, config=short.merge(Config(retries={"max_attempts": 1}))
        )
        self._executor = ThreadPoolExecutor(OPS_THREADS, thread_name_prefix="mqkit-sqs")

    @property
    def region(self) -> str:
        return str(self.sqs.meta.region_name)

    async def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run ``fn(**kwargs)`` on the thread pool and await its result."""
        if self._executor is None:
            raise RuntimeError("the sqs:// connection is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(**kwargs))

    def close(self) -> None:
        """Stop the pool (running calls finish in the background) and drop the clients."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for client in (self.sns, self.sqs, self.sqs_receive, self.sts):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.sns = self.sqs = self.sqs_receive = self.sts = None
