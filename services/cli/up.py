"""`ferry up [--sandbox] [--only NAME ...]`: run every service as a local process.

`--sandbox` also starts the local stand-ins for HF Hub, AIoD and OpenHexa once they exist
(`services/sandbox`); they are not built yet, and it says so.

Each package of `services/` with a `__main__.py` (except `cli`) is a service and runs as
`python -m services.<name>` with its own FERRY_HTTP_PORT (base port + its index in sorted
order). Output lines are prefixed with the service's name. Ctrl-C or SIGTERM stops them all:
SIGTERM each, wait their graceful timeout plus a margin, SIGKILL what is left (a second
Ctrl-C kills at once). A service that exits on its own with an error stops the others too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq

from services.cli import connection
from services.cli.errors import CliError, UsageError
from shared.settings import BaseSettings

SERVICES_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = SERVICES_DIR.parent
NOT_SERVICES = {"cli", "sandbox"}  # sandbox holds the stand-ins, started by --sandbox
SANDBOX = "sandbox"
STOP_MARGIN = 5.0  # seconds beyond a service's own graceful timeout before SIGKILL
LINE_LIMIT = 1 << 20  # JSON log lines can be long; readline() would fail on them otherwise
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "up",
        help="run every service as a local process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sandbox", action="store_true", help="also the local stand-ins (not built yet)"
    )
    parser.add_argument(
        "--only", nargs="+", action="extend", default=[], metavar="NAME", help="only these"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("FERRY_UP_BASE_PORT", "8080")),
        help="HTTP port of the first service (default 8080, or FERRY_UP_BASE_PORT)",
    )
    parser.set_defaults(run=run)


def discover() -> list[str]:
    return sorted(
        path.parent.name
        for path in SERVICES_DIR.glob("*/__main__.py")
        if path.parent.name not in NOT_SERVICES
    )


def has_sandbox() -> bool:
    return (SERVICES_DIR / SANDBOX / "__main__.py").is_file()


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    names = chosen(args.only)
    if args.sandbox:
        if has_sandbox():
            names.append(SANDBOX)
        else:
            print(
                "ferry up: note: --sandbox: the local stand-ins for HF Hub, AIoD and OpenHexa"
                " are not built yet; starting the services without them",
                file=sys.stderr,
            )
    if not names:
        raise UsageError("no services to start")
    asyncio.run(check_broker(settings))
    plan = [(name, args.base_port + index) for index, name in enumerate(names)]
    width = max(len(name) for name in names)
    for name, port in plan:
        print(f"{name:<{width}}  http://127.0.0.1:{port}  (/healthz /readyz /metrics)")
    sys.stdout.flush()
    supervisor = Supervisor(settings, plan, colored=sys.stdout.isatty())
    return asyncio.run(supervisor.run())


def chosen(only: list[str]) -> list[str]:
    available = discover()
    unknown = sorted(set(only) - set(available))
    if unknown:
        raise UsageError(
            f"no such service: {', '.join(unknown)} (available: {', '.join(available) or 'none'})"
        )
    return [name for name in available if not only or name in only]


async def check_broker(settings: BaseSettings) -> None:
    try:
        conn = await aio_pika.connect(settings.amqp_url, timeout=3)
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
        raise CliError(
            f"{connection.unreachable(settings, exc)}; `make up` starts one,"
            " or run `rabbitmq-server -detached`"
        ) from None
    await conn.close()


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    prefix: str


class Supervisor:
    def __init__(self, settings: BaseSettings, plan: list[tuple[str, int]], *, colored: bool):
        self.settings = settings
        self.plan = plan
        self.colored = colored
        self.width = max(len(name) for name, _ in plan)
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.killing = asyncio.Event()
        self.output_closed = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        for index, (name, port) in enumerate(self.plan):
            self.children.append(await self._start(index, name, port))
        pumps = [asyncio.create_task(self._pump(child)) for child in self.children]
        failed = await self._wait_for_stop_or_failure()
        clean = await self._stop_all()
        await asyncio.gather(*pumps)
        return 0 if clean and not failed else 1

    def _on_signal(self) -> None:
        if self.stopping.is_set():
            self.killing.set()  # impatient second Ctrl-C
        self.stopping.set()

    async def _start(self, index: int, name: str, port: int) -> Child:
        env = {
            **os.environ,
            "FERRY_AMQP_URL": self.settings.amqp_url,
            "FERRY_NAMESPACE": self.settings.namespace,
            "FERRY_HTTP_PORT": str(port),
            "PYTHONUNBUFFERED": "1",  # lines as they happen, not when a buffer fills
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{name}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT,
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop each in turn.
            start_new_session=True,
        )
        label = f"{name:<{self.width}} |"
        if self.colored:
            label = f"\x1b[{COLORS[index % len(COLORS)]}m{label}\x1b[0m"
        return Child(name, process, label + " ")

    async def _pump(self, child: Child) -> None:
        stream = child.process.stdout
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than LINE_LIMIT: pass on what there is
                line = await stream.read(LINE_LIMIT)
            if not line:
                return
            self._say(child, line.decode(errors="replace").rstrip("\n"))

    def _say(self, child: Child, text: str) -> None:
        if self.output_closed:
            return
        try:
            sys.stdout.write(child.prefix + text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # Nobody reads us any more (`ferry up | head`): stop everything, quietly.
            self.output_closed = True
            self.stopping.set()

    async def _wait_for_stop_or_failure(self) -> bool:
        """Wait for a stop request or a service exiting with an error (then True)."""
        exits = {asyncio.create_task(c.process.wait()): c for c in self.children}
        stop = asyncio.create_task(self.stopping.wait())
        try:
            while exits:
                done, _ = await asyncio.wait({*exits, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return False
                for finished in done:
                    child = exits.pop(finished)
                    code = finished.result()
                    self._say(child, f"exited on its own with code {code}")
                    if code != 0:
                        return True
            return False
        finally:
            stop.cancel()
            for waiting in exits:
                waiting.cancel()

    async def _stop_all(self) -> bool:
        """SIGTERM, a graceful wait, SIGKILL for stragglers; True if all stopped cleanly."""
        running = [c for c in self.children if c.process.returncode is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        patience = self.settings.graceful_timeout + STOP_MARGIN
        all_stopped: asyncio.Future[Any] = asyncio.gather(*(c.process.wait() for c in running))
        kill_now: asyncio.Future[Any] = asyncio.ensure_future(self.killing.wait())
        await asyncio.wait(
            [all_stopped, kill_now], timeout=patience, return_when=asyncio.FIRST_COMPLETED
        )
        kill_now.cancel()
        clean = True
        for child in running:
            if child.process.returncode is None:
                self._say(child, f"did not stop within {patience:g}s: killed")
                child.process.kill()
                await child.process.wait()
                clean = False
            elif child.process.returncode != 0:
                self._say(child, f"stopped with code {child.process.returncode}")
                clean = False
        return clean
