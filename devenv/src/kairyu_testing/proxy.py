"""A TCP proxy in front of the apiserver that can go silent, for tests of half-open connections.

A connection whose peer vanished without a reset (a node gone, a NAT entry dropped) accepts
writes and never answers; nothing on localhost fails that way by itself. This proxy forwards
bytes both ways (TLS passes through untouched) until told to `stall` its connections: from then
on it reads and drops everything, answering nothing, while the sockets stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Self

import yaml


class SilentProxy:
    """Forwards 127.0.0.1:<port> to the upstream address until `stall()`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._stalled: set[asyncio.Event] = set()  # one per live connection: set = stalled
        self._new_stall = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._every_writer: list[asyncio.StreamWriter] = []  # each waited for at exit
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        # Closing both ends lets every pump see the end and return (a cancelled connection task
        # would be logged as an error by asyncio's stream callback).
        for writer in self._writers:
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        # close() only schedules the socket's closing: wait for it here, or a socket still open
        # when the test's loop ends is collected later and fails whichever test is running then.
        closing = [writer.wait_closed() for writer in self._every_writer]
        if self._server is not None:
            closing.append(self._server.wait_closed())
        with contextlib.suppress(Exception):  # a reset peer: its socket is closed all the same
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=2)

    def stall(self, *, new_connections: bool = True) -> None:
        """Every open connection goes silent; new ones too unless `new_connections` is False."""
        for flag in self._stalled:
            flag.set()
        self._new_stall = new_connections

    def kubeconfig(self, original: Path, written: Path) -> Path:
        """A copy of `original` whose cluster server is this proxy (same certificates)."""
        config = yaml.safe_load(original.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        written.write_text(yaml.safe_dump(config))
        written.chmod(0o600)
        return written

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # always, in a connection callback; None only outside a task
            self._tasks.add(task)
        stalled = asyncio.Event()
        if self._new_stall:
            stalled.set()
        self._stalled.add(stalled)
        self._writers.add(writer)
        self._every_writer.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._writers.add(up_writer)
            self._every_writer.append(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, stalled), self._pump(up_reader, writer, stalled)
                )
            finally:
                up_writer.close()
                self._writers.discard(up_writer)
        except OSError:
            pass
        finally:
            self._stalled.discard(stalled)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, stalled: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):  # a reset or a closed end: this direction is over
            while data := await source.read(65536):
                if stalled.is_set():
                    continue  # swallowed: the peer sees an open connection that never answers
                sink.write(data)
                await sink.drain()
            sink.write_eof()
