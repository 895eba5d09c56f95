"""The common runner of the stand-ins: which ones exist, and serving them on 127.0.0.1.

A stand-in is a module of this package that exposes `STAND_IN = StandIn(...)`:

    StandIn(
        name="hf-hub",                 # what `ferry sandbox NAME` calls it
        default_port=9101,             # where it listens unless --port says otherwise
        summary="Hugging Face Hub",    # one line for `ferry sandbox -h`
        build=from_options,            # SandboxOptions -> aiohttp web.Application
        add_arguments=add_arguments,   # optional: its own flags (prefixed, e.g. --hf-token)
    )

`build` makes a fresh `web.Application` from `SandboxOptions`: the seed, the catalogue size,
the faults given at start (`faults_of(options)` turns them into a `faults.Faults`, which
`faults.install` puts in force), and `flags`, the parsed command line, where its own flags
are (absent when built from Python: use defaults). It must set `app[BANNER]` to a function
that, given the base URL it listens on (`http://127.0.0.1:PORT`, no trailing slash), returns
its first line of output: where it listens and which credentials it accepts.

The registry (`stand_ins()`) knows `hf_hub`, `aiod` and `openhexa`, in that order, and takes
each whose module exists and exposes `STAND_IN`. Default ports: hf-hub 9101, aiod 9102,
openhexa 9103; with `--port N`, the i-th chosen stand-in listens on N+i (0: any free port).

Serving:
- `serving([(name, app, port), ...])`: an async context manager that listens and yields
  `Listening(name, url, app)` for each; leaving it stops them. `ListenError` (one clear line)
  when a port cannot be taken.
- `ServerThread([(name, app, port), ...])`: the same on a loop of its own in a background
  thread, for synchronous clients (`huggingface_hub`, `aiondemand`) and benchmarks:
  `with ServerThread([...]) as listening: ...`; `call_soon(fn)` runs `fn` on that loop.
- `plan(names, port, options)`: the (name, app, port) triples for names ("all" or none: every
  one); `UnknownStandIn` for a name that is none.
- `run(names, port, options)`: what `ferry sandbox` does: serve, print each first line, and
  wait for SIGINT or SIGTERM (then return 0).

Every expected failure is a `SandboxError` whose message is the one line to show.

`count_argument(minimum, maximum)` is an argparse `type` for a stand-in's numeric flags.

Handlers are cancelled when their client goes away, so a request held on purpose (a timeout
fault) ends with the client that gave up on it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import importlib
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from services.sandbox.faults import FaultChange, Faults

HOST = "127.0.0.1"
STAND_IN_MODULES = ("hf_hub", "aiod", "openhexa")
SHUTDOWN_SECONDS = 2.0  # requests still running at shutdown are cut after this

BANNER: web.AppKey[Callable[[str], str]] = web.AppKey("sandbox_banner")

T = TypeVar("T")


class SandboxError(Exception):
    """An expected failure of the runner (a port taken, an unknown name): one line says it."""


class ListenError(SandboxError):
    """A port cannot be taken (in use, or not allowed)."""


class UnknownStandIn(SandboxError):
    """A name that is no stand-in: a usage error."""


@dataclass(frozen=True)
class SandboxOptions:
    """What every stand-in is built from."""

    seed: int = 0
    datasets: int = 1000  # size of a generated catalogue, for the stand-ins that have one
    faults: tuple[FaultChange, ...] = ()  # in force from the start
    flags: Mapping[str, Any] = field(default_factory=dict)  # the parsed command line

    def flag(self, name: str, default: T) -> T:
        """A stand-in's own flag, or `default` when it was not given (or not parsed at all)."""
        value = self.flags.get(name)
        return default if value is None else value  # type: ignore[no-any-return]


def faults_of(options: SandboxOptions) -> Faults:
    faults = Faults(seed=options.seed)
    for change in options.faults:
        faults.apply(change)
    return faults


def count_argument(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse `type` for a whole number in [minimum, maximum], for stand-ins' flags too."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be {minimum}-{maximum}, not {value}")
        return value

    return parse


def _no_arguments(group: argparse._ArgumentGroup) -> None:
    del group


@dataclass(frozen=True)
class StandIn:
    name: str
    default_port: int
    summary: str
    build: Callable[[SandboxOptions], web.Application]
    add_arguments: Callable[[argparse._ArgumentGroup], None] = _no_arguments


def stand_ins() -> dict[str, StandIn]:
    """Every stand-in there is, by name, in the order `all` starts them."""
    found: dict[str, StandIn] = {}
    for module_name in STAND_IN_MODULES:
        qualified = f"{__package__}.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name == qualified:
                continue  # not written (yet)
            raise
        stand_in = getattr(module, "STAND_IN", None)
        if isinstance(stand_in, StandIn):
            found[stand_in.name] = stand_in
    return found


@dataclass(frozen=True)
class Listening:
    name: str
    url: str  # http://127.0.0.1:PORT, no trailing slash
    app: web.Application

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def banner(self) -> str:
        describe = self.app.get(BANNER)
        return describe(self.url) if describe else f"{self.name}: listening on {self.url}"


@contextlib.asynccontextmanager
async def serving(
    apps: Sequence[tuple[str, web.Application, int]], host: str = HOST
) -> AsyncIterator[list[Listening]]:
    """Listen with each app on its port (0: any free one) until the block ends."""
    runners: list[web.AppRunner] = []
    listening: list[Listening] = []
    try:
        for name, app, port in apps:
            runner = web.AppRunner(
                app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
            )
            await runner.setup()
            runners.append(runner)
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise ListenError(f"{name}: cannot listen on {host}:{port}: {reason}") from None
            bound_port = runner.addresses[0][1]
            listening.append(Listening(name, f"http://{host}:{bound_port}", app))
        yield listening
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


class ServerThread:
    """Stand-ins served from a background thread with its own event loop."""

    def __init__(self, apps: Sequence[tuple[str, web.Application, int]], host: str = HOST):
        self._apps = apps
        self._host = host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._served: concurrent.futures.Future[None] | None = None
        self.listening: list[Listening] = []

    def __enter__(self) -> list[Listening]:
        self._thread.start()
        ready: concurrent.futures.Future[list[Listening]] = concurrent.futures.Future()
        self._served = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        try:
            self.listening = ready.result(timeout=30)
        except BaseException:
            self._shut_down()
            raise
        return self.listening

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shut_down()

    def call_soon(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the servers' loop (where their state lives) and return its result."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    async def _serve(self, ready: concurrent.futures.Future[list[Listening]]) -> None:
        self._stop = asyncio.Event()
        try:
            async with serving(self._apps, self._host) as listening:
                ready.set_result(listening)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def _shut_down(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._served is not None:
            with contextlib.suppress(BaseException):
                self._served.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def plan(
    names: Sequence[str], port: int | None, options: SandboxOptions
) -> list[tuple[str, web.Application, int]]:
    """The apps to serve for these names ("all" for every one), each with its port."""
    known = stand_ins()
    chosen = list(known) if "all" in names or not names else list(dict.fromkeys(names))
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise UnknownStandIn(
            f"no such stand-in: {', '.join(unknown)} (available: {', '.join(known)}, all)"
        )
    if port is not None and not 0 <= port <= 65535 - len(chosen):
        raise SandboxError(f"--port must be 0-{65535 - len(chosen)}, not {port}")
    return [
        (
            name,
            known[name].build(options),
            known[name].default_port if port is None else (port and port + index),
        )
        for index, name in enumerate(chosen)
    ]


def run(names: Sequence[str], port: int | None, options: SandboxOptions, host: str = HOST) -> int:
    """Serve the named stand-ins until SIGINT or SIGTERM; SandboxError if they cannot start."""
    apps = plan(names, port, options)
    return asyncio.run(_serve_until_signalled(apps, host))


async def _serve_until_signalled(
    apps: Sequence[tuple[str, web.Application, int]], host: str
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(apps, host) as listening:
        for server in listening:
            print(server.banner())
        sys.stdout.flush()
        await stop.wait()
    return 0
