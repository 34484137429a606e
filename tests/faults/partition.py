"""A network partition on loopback: a TCP proxy that can stop forwarding without a word.

Why not a network namespace: a veth pair between namespaces needs root, routes beyond
127.0.0.1 and iptables/nft to drop packets, none of which this machine allows (traffic goes
only to 127.0.0.1). What a partition does to a client is simpler than the tool: bytes stop
arriving in both directions and nothing tells either end (no RST, no FIN), so only the
client's own heartbeats or timeouts can notice. ``BlackHoleProxy`` does exactly that to the
connections that go through it, and nothing to anyone else's (the shared brokers stay
untouched).

``cut()``:

- every proxied connection stops being read in both directions and stays open: what was
  sent is held as if in flight (the kernel buffers it, as TCP retransmission would), no
  byte is delivered, nothing is closed;
- new connections are not accepted: the proxy stops calling ``accept`` and shrinks its
  listen backlog to 0, so the kernel completes at most one more handshake (that connection
  then gets no bytes) and silently drops every further SYN. ``connect()`` therefore hangs
  until the client's own timeout, as it does against a black hole, instead of failing at
  once with a refusal (which would be an RST, a thing a dropped network never sends). Not
  accepting comes closer to a black hole than accepting and then forwarding nothing,
  because a dropped network does not complete handshakes either.

While cut, the proxy watches (``POLLRDHUP``, reading nothing) for clients closing their
end: ``drops`` says when each client noticed its connection was dead and gave up on it, the
same way whatever the client library.

``heal()`` resumes everything: held bytes are delivered (as retransmissions would be after
a real partition heals), held handshakes complete, and a connection whose client gave up
meanwhile is closed toward the broker once its FIN is read.

One difference from a real partition remains: the proxy's kernel still acknowledges what a
client sends, so TCP-level keepalive and retransmission timeouts never fire. Clients must
notice the cut through their protocol's heartbeats or request timeouts, which is the very
thing the partition tests measure (TCP keepalive defaults of two hours are far too long to
matter anyway).

The proxy runs its own asyncio loop in a daemon thread, so it keeps forwarding whatever the
test's event loop is doing. ``cut`` and ``heal`` return only once they took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

BACKLOG = 64
WATCH_EVERY = 0.02
_CLOSED_BY_PEER = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class _End(asyncio.Protocol):
    """One side of a proxied connection: what it reads goes to the other side."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.peer_full = False  # the peer's write buffer is over its high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sync()

    def sync(self) -> None:
        """Read only while healed, joined to a connected peer that can take more."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        peer = self.peer
        flowing = (
            not self.link.proxy.is_cut
            and peer is not None
            and peer.transport is not None
            and not self.peer_full
        )
        if flowing:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.link.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.peer_full = True
            self.peer.sync()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.peer_full = False
            self.peer.sync()


class _Link:
    """A client connection and its connection to the target."""

    def __init__(self, proxy: BlackHoleProxy) -> None:
        self.proxy = proxy
        self.client = _End(self)
        self.target = _End(self)
        self.client.peer, self.target.peer = self.target, self.client
        self.closed = False
        self.dropped_at: float | None = None
        """When the client closed this connection during a cut (it gave up on it)."""

    def client_fd(self) -> int | None:
        transport = self.client.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return None if sock is None or sock.fileno() < 0 else int(sock.fileno())

    def sync(self) -> None:
        self.client.sync()
        self.target.sync()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        for end in (self.client, self.target):
            if end.transport is not None:
                end.transport.close()  # flushes what is buffered, then FIN

    def abort(self) -> None:
        self.closed = True
        for end in (self.client, self.target):
            if end.transport is not None:
                end.transport.abort()


class BlackHoleProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port``; see the module docstring.

    ``with BlackHoleProxy(5672) as proxy: url = proxy.url_for(broker_url)``. The port is
    bound at construction, so ``target`` may still be changed before ``start`` (a broker
    that must advertise the proxy's port is started in between).
    """

    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.links: set[_Link] = set()
        self.accepted = 0
        self.is_cut = False
        self.cut_at: float | None = None
        """``time.monotonic()`` of the last ``cut``."""
        self.healed_at: float | None = None
        self.drops: list[float] = []
        """``time.monotonic()`` of each client closing a proxied connection during a cut: the
        moment its client noticed the connection was dead and gave up on it (seen with
        ``POLLRDHUP``, without reading: the FIN waits behind held bytes until the heal)."""
        self._watching: asyncio.Task[None] | None = None
        self._joining: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"black-hole-proxy:{target_port}", daemon=True
        )
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.setblocking(False)
        self._accepting: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Client connections currently proxied (a closed client is seen only when healed)."""
        return len(self.links)

    def url_for(self, url: str) -> str:
        """``url`` (one host) pointed at this proxy instead of the target."""
        parts = urlsplit(url)
        userinfo, _, _hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    # --- control (from any thread) ------------------------------------------------------
    def start(self) -> BlackHoleProxy:
        self._listener.listen(BACKLOG)
        self._thread.start()
        self._run(self._resume_accepting())
        return self

    def cut(self) -> float:
        """Stop all traffic, close nothing; returns the ``time.monotonic()`` it took effect."""
        self._run(self._cut())
        assert self.cut_at is not None
        return self.cut_at

    def heal(self) -> float:
        """Resume all traffic; returns the ``time.monotonic()`` it took effect."""
        self._run(self._heal())
        assert self.healed_at is not None
        return self.healed_at

    def close(self) -> None:
        if not self._thread.is_alive():
            self._listener.close()
            return
        with contextlib.suppress(Exception):
            self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._listener.close()
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BlackHoleProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # --- on the proxy's loop ------------------------------------------------------------
    async def _cut(self) -> None:
        self.is_cut = True
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        self._listener.listen(0)  # Linux: the kernel then drops SYNs beyond one waiting
        for link in list(self.links):
            link.sync()
        self.cut_at = time.monotonic()
        self._watching = asyncio.get_running_loop().create_task(self._watch_drops())

    async def _heal(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
        self.is_cut = False
        self._listener.listen(BACKLOG)
        for link in list(self.links):
            link.sync()
        await self._resume_accepting()
        self.healed_at = time.monotonic()

    async def _watch_drops(self) -> None:
        while True:
            poller = select.poll()
            watched: dict[int, _Link] = {}
            for link in self.links:
                fd = link.client_fd()
                if link.dropped_at is None and fd is not None:
                    poller.register(fd, select.POLLRDHUP)
                    watched[fd] = link
            now = time.monotonic()
            for fd, events in poller.poll(0):
                if events & _CLOSED_BY_PEER:
                    watched[fd].dropped_at = now
                    self.drops.append(now)
            await asyncio.sleep(WATCH_EVERY)

    async def _resume_accepting(self) -> None:
        if self._accepting is None:
            self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self._listener)
            self.accepted += 1
            link = _Link(self)
            self.links.add(link)
            joining = loop.create_task(self._join(link, client))
            self._joining.add(joining)
            joining.add_done_callback(self._joining.discard)

    async def _join(self, link: _Link, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.connect_accepted_socket(lambda: link.client, client)
            await loop.create_connection(lambda: link.target, *self.target)
        except OSError:
            link.close()  # the target is down: the client sees its connection end
            return
        if link.closed:  # the client left while the target connection was being made
            link.close()
            assert link.target.transport is not None
            link.target.transport.close()
            return
        link.sync()

    async def _shutdown(self) -> None:
        tasks = [t for t in (self._accepting, self._watching, *self._joining) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self.links):
            link.abort()
        self.links.clear()


def port_of(url: str) -> int:
    """The port of a one-host broker URL."""
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url!r}")
    return port
