"""What every ``mqkit`` subcommand shares: the --url option, consoles, redacted failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from mqkit.client import Client
from mqkit.errors import ConfigurationError, MqkitError
from mqkit.url import BrokerURL, redact_text, redact_url

T = TypeVar("T")

DEFAULT_URL = "memory://"
Url = Annotated[
    str,
    typer.Option(
        "--url", envvar="MQKIT_URL", show_envvar=True,
        help="Broker URL, e.g. kafka://127.0.0.1:9092, amqp://user:pass@host, memory://.",
    ),
]
Idle = Annotated[
    float, typer.Option("--idle", min=0.01, help="Stop reading after this many quiet seconds.")
]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _secrets(url: str) -> list[str]:
    try:
        password = BrokerURL.parse(url).password
    except MqkitError:
        return []
    return [password] if password else []


def _safe(text: str, url: str) -> str:
    return redact_text(text.replace(url, redact_url(url)), _secrets(url))


def _fail(message: str, url: str, code: int = 1) -> NoReturn:
    _err().print(f"[bold red]error:[/] {_safe(message, url)}", markup=True)
    raise typer.Exit(code)


def _run(url: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main`` on a fresh event loop; turn mqkit errors into a clean message and exit."""
    try:
        return asyncio.run(main())
    except typer.Exit:
        raise
    except ConfigurationError as exc:
        _fail(str(exc), url, code=2)
    except (MqkitError, OSError, TimeoutError) as exc:
        _fail(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc), url)


async def _with_client(url: str, body: Callable[[Client], Awaitable[T]]) -> T:
    async with Client(url) as client:
        return await body(client)
