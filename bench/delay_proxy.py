"""A TCP proxy that delays every chunk, to emulate a network between the bench's processes
and PostgreSQL or RabbitMQ (the kernel here has no ``netem`` queueing discipline).

``python -m bench.delay_proxy --target HOST:PORT --rtt-ms 2`` listens on a free local port,
prints it on its first line of stdout, and forwards every connection to the target, holding
each chunk for half the round trip in each direction. Order within a direction is kept and
chunks are not merged, so bandwidth is not limited, only latency added: a request and its
answer take at least ``rtt`` longer, however small they are. On SIGTERM it prints one JSON
line with the CPU time it used, which the bench reports (the proxy shares the machine's
cores with everything it measures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

#: Bytes read per chunk: large enough that a burst is a few chunks, not thousands.
CHUNK = 256 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward what ``reader`` yields to ``writer``, each chunk ``delay`` seconds after it
    arrived; a chunk that arrives while earlier ones wait is not held longer than its own
    delay (the delays overlap, as on a wire)."""
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            at, chunk = await due.get()
            if not chunk:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(CHUNK)
            due.put_nowait((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(target_host: str, target_port: int, rtt: float, ready: asyncio.Event) -> int:
    """Serve until cancelled; return the port listened on (printed once listening)."""
    one_way = rtt / 2

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pump(client_r, server_w, one_way),
            _pump(server_r, client_w, one_way),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    print(port, flush=True)
    ready.set()
    async with server:
        await server.serve_forever()
    return port


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delay_proxy", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, required=True, help="added round trip (ms)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")

    loop = asyncio.new_event_loop()
    started = time.monotonic()
    task = loop.create_task(serve(host, int(port), args.rtt_ms / 1000, asyncio.Event()))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds()
    print(json.dumps({"cpu_seconds": round(cpu, 3), "wall_seconds": round(elapsed, 3)}))
    sys.stdout.flush()


@dataclass
class DelayProxy:
    """A running proxy process: ``port`` on 127.0.0.1 forwards to the target with ``rtt_ms``
    added. :meth:`stop` returns its CPU use."""

    target: str
    rtt_ms: float
    port: int = 0
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def start(self) -> DelayProxy:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.delay_proxy",
                "--target",
                self.target,
                "--rtt-ms",
                str(self.rtt_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self._process.kill()
            raise RuntimeError(f"the delay proxy did not start (printed {line!r})")
        self.port = int(line)
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> dict[str, Any]:
        """Stop the proxy; its CPU and wall time in seconds."""
        assert self._process is not None and self._process.stdout is not None
        self._process.send_signal(signal.SIGTERM)
        out, _ = self._process.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else {}

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self.stop()


if __name__ == "__main__":
    main()
