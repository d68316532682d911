"""A TCP proxy on loopback that injects network faults between aioq and a real redis-server.

``FaultProxy(upstream_port)`` listens on 127.0.0.1 (a free port) and forwards every connection
to ``127.0.0.1:upstream_port``; point an app at ``proxy.url``. Faults, switched on and off by
the test while traffic flows:

* ``latency``: seconds added to every chunk, each way (order kept);
* ``stall()`` / ``flow()``: bytes stop moving on every current connection (and on new ones;
  ``stall(existing_only=True)``: only on the current ones) while the sockets stay open, as
  behind a black-holing router; ``flow()`` lets the held bytes through again;
* ``cut_reply(match)``: the reply to the next request containing ``match`` is forwarded only
  in part, then the client's socket is reset (RST) and the server side closed: the command
  ran in Redis, its reply is lost mid-way;
* ``reset_all()``: reset every current connection at once;
* ``refuse``: new connections are reset as soon as they are accepted (with ``reset_all()``, a
  partition that drops connections rather than stalling them).

Nothing here knows RESP beyond ``match`` being a substring of a request's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

CHUNK = 1 << 16


class _Link:
    """One proxied connection: client <-> proxy <-> Redis."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = client
        self.s_reader, self.s_writer = server
        self.cut_armed = False  # the next reply on this link is cut
        self.closed = False
        self.flowing = asyncio.Event()  # this link's own stall (stall(existing_only=True))
        self.flowing.set()
        self.tasks = [
            asyncio.ensure_future(self._pump(self.c_reader, self.s_writer, upstream=True)),
            asyncio.ensure_future(self._pump(self.s_reader, self.c_writer, upstream=False)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        proxy = self.proxy
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._wait_flowing()  # stalled: hold the bytes, keep the socket open
                if proxy.latency:
                    await asyncio.sleep(proxy.latency)
                    await self._wait_flowing()
                if upstream:
                    if proxy._cut_match is not None and proxy._cut_match in data:
                        proxy._cut_match = None
                        self.cut_armed = True
                elif self.cut_armed:
                    # forward part of the reply (at least a byte, never all of it), then RST
                    writer.write(data[: max(1, len(data) // 2)] if len(data) > 1 else b"")
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    proxy.cuts += 1
                    self.reset()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    async def _wait_flowing(self) -> None:
        while not (self.proxy._flowing.is_set() and self.flowing.is_set()):
            await self.proxy._flowing.wait()
            await self.flowing.wait()

    def reset(self) -> None:
        """RST the client's socket (SO_LINGER 0), close the server side."""
        if self.closed:
            return
        self.closed = True
        sock = self.c_writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.c_writer.transport.abort()
        self.s_writer.transport.abort()
        self.proxy._links.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.c_writer, self.s_writer):
            w.close()
        self.proxy._links.discard(self)


class FaultProxy:
    """``async with FaultProxy(redis_port) as proxy: App(..., redis_url=proxy.url)``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.refuse = False
        self.accepted = 0
        self.cuts = 0
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut_match: bytes | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def connections(self) -> int:
        return len(self._links)

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        try:
            server = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._links.add(_Link(self, (reader, writer), server))

    def stall(self, existing_only: bool = False) -> None:
        """Stop every byte, each way, on every connection (sockets stay open); with
        ``existing_only`` only on the connections open now (new ones flow), as when a router
        loses the state of established connections."""
        if existing_only:
            for link in self._links:
                link.flowing.clear()
        else:
            self._flowing.clear()

    def flow(self) -> None:
        """Let bytes move again (what was held goes through, in order)."""
        self._flowing.set()
        for link in self._links:
            link.flowing.set()

    def cut_reply(self, match: bytes) -> None:
        """Cut the reply to the next request whose bytes contain ``match`` (then RST)."""
        self._cut_match = match

    @property
    def cut_pending(self) -> bool:
        return self._cut_match is not None

    def reset_all(self) -> int:
        """RST every current connection; how many."""
        links = list(self._links)
        for link in links:
            link.reset()
        return len(links)

    async def aclose(self) -> None:
        self.flow()
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
            for t in link.tasks:
                t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
