"""`ferry up [--sandbox] [--only NAME ...]`: run the services of compose.yaml as local processes.

compose.yaml is the one list of services, commands and settings: `ferry up` runs every
service of it whose command is `python ...` (RabbitMQ must already run; PostgreSQL is
replaced by a SQLite file), with compose's settings translated to one machine:
- container hostnames become 127.0.0.1, and every container port (`expose`) a local port:
  base port, base port + 1, ... in the order of the file (shown at start);
- listening on 0.0.0.0 becomes 127.0.0.1;
- volumes become directories under --data-dir, a secret its `file`;
- FERRY_AMQP_URL and FERRY_NAMESPACE are ferry up's own (--amqp-url, --namespace);
- a PostgreSQL URL becomes `sqlite:///DATA_DIR/tasks.db`; a setting that points at a service
  not started is left out (the service's own default applies);
- the operator's environment wins over compose's values (not over ports and hosts).

`--sandbox` also starts the `sandbox` profile (the stand-ins of HF Hub, AIoD and OpenHexa)
and points the services at them: compose's `x-sandbox-variables` keep their defaults
whatever the environment says. The gateway needs mutual-TLS credentials: when its secret
file (./certs/mtls-credentials.json) is missing, development ones are made there, as
`ferry certs --out certs` would (with certs/client-credentials.json for `ferry workspaces`).

Output lines are prefixed with the service's name. Ctrl-C or SIGTERM stops them all:
SIGTERM each, wait their graceful timeout plus a margin, SIGKILL what is left (a second
Ctrl-C kills at once). A service that exits on its own is started again when compose says
`restart` (as compose would), unless it dies within CRASH_LOOP_SECONDS of starting three
times in a row: then, and for a service compose does not restart, the others stop too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import yaml

from services.cli import connection
from services.cli.errors import CliError, UsageError
from shared.settings import BaseSettings

SERVICES_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = SERVICES_DIR.parent
COMPOSE_FILE = PROJECT_ROOT / "compose.yaml"
NOT_SERVICES = {"cli", "sandbox"}  # sandbox holds the stand-ins, started by --sandbox
SANDBOX = "sandbox"  # the compose profile of the stand-ins
SANDBOX_VARIABLES = "x-sandbox-variables"
LOCAL_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"
SECRETS_DIR = PurePosixPath("/run/secrets")
CRASH_LOOP_SECONDS = 10.0  # a restarted service dying sooner than this three times: give up
STOP_MARGIN = 5.0  # seconds beyond a service's own graceful timeout before SIGKILL
LINE_LIMIT = 1 << 20  # JSON log lines can be long; readline() would fail on them otherwise
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, $$
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "up",
        help="run every service of compose.yaml as a local process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="also the local stand-ins of HF Hub, AIoD and OpenHexa, and use them",
    )
    parser.add_argument(
        "--only", nargs="+", action="extend", default=[], metavar="NAME", help="only these"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("FERRY_UP_BASE_PORT", "8080")),
        help="first local port (default 8080, or FERRY_UP_BASE_PORT)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("FERRY_UP_DATA_DIR", ".ferry")),
        help="where the volumes go: the tracker's SQLite file, workspaces, models"
        " (default ./.ferry, or FERRY_UP_DATA_DIR)",
    )
    parser.set_defaults(run=run)


def discover() -> list[str]:
    """The service packages (each with a `__main__.py`), in sorted order."""
    return sorted(
        path.parent.name
        for path in SERVICES_DIR.glob("*/__main__.py")
        if path.parent.name not in NOT_SERVICES
    )


def has_sandbox() -> bool:
    return (SERVICES_DIR / SANDBOX / "__main__.py").is_file()


# -- compose.yaml ----------------------------------------------------------------------------


class ComposeError(CliError):
    """compose.yaml cannot be read, or asks for something ferry up cannot do."""


def interpolate(
    text: str, environ: Mapping[str, str], *, forced_defaults: frozenset[str] = frozenset()
) -> str:
    """`text` with compose's `${...}` variables replaced, as `docker compose` does; a name in
    `forced_defaults` takes its default even when the environment sets it."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        operator, argument = match["operator"] or "", match["argument"] or ""
        value = None if name in forced_defaults else environ.get(name)
        unset = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("-"):
            return argument if unset else str(value)
        if operator.endswith("?") and unset:
            raise ComposeError(f"compose.yaml: {name} is required: {argument or 'not set'}")
        return "" if value is None else value

    return _VARIABLE.sub(replace, text)


def variables_of(text: str) -> set[str]:
    """The names of the variables `text` interpolates."""
    return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def read_compose(
    path: Path = COMPOSE_FILE,
    environ: Mapping[str, str] | None = None,
    *,
    sandbox_defaults: bool = False,
) -> dict[str, Any]:
    """compose.yaml, parsed (anchors and merge keys resolved) and interpolated."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ComposeError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ComposeError(f"{path}: no `services` mapping")
    forced = frozenset(raw.get(SANDBOX_VARIABLES, ())) if sandbox_defaults else frozenset()
    env = os.environ if environ is None else environ

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, env, forced_defaults=forced)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    document: dict[str, Any] = walk(raw)
    return document


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's `environment`, as a mapping (either form), values as text."""
    given = service.get("environment") or {}
    if isinstance(given, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in given)
        return {key: value for key, value in pairs}
    return {key: _as_text(value) for key, value in given.items()}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def container_ports(service: Mapping[str, Any]) -> list[int]:
    """The ports a compose service listens on inside its container, in the file's order."""
    ports: list[int] = []
    for entry in service.get("expose") or ():
        ports.append(int(str(entry).split("/")[0]))
    for entry in service.get("ports") or ():
        target = entry.get("target") if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        ports.append(int(str(target).split("/")[0]))
    return list(dict.fromkeys(ports))


def runs_locally(service: Mapping[str, Any]) -> bool:
    """Ferry's own services (and the stand-ins) run a Python command of the Ferry image;
    RabbitMQ and PostgreSQL do not (ferry up expects the one, replaces the other)."""
    command = service.get("command")
    return isinstance(command, list) and bool(command) and command[0] == "python"


# -- the local plan --------------------------------------------------------------------------


@dataclass
class LocalProcess:
    """One compose service as a local process."""

    name: str
    argv: list[str]
    environment: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    port_names: dict[int, str] = field(default_factory=dict)  # local port -> what it is
    # compose's `restart`: a service that exits on its own is started again, as compose
    # would (unless it keeps dying at once: then ferry up stops, see Supervisor).
    restarts: bool = False

    def describe(self) -> str:
        http = self.environment.get("FERRY_HTTP_PORT")
        parts = [f"http://{LOCAL_HOST}:{http}  (/healthz /readyz /metrics)"] if http else []
        named = [f"{what}={LOCAL_HOST}:{port}" for port, what in self.port_names.items()]
        other = [p for p in self.ports.values() if p not in self.port_names and str(p) != http]
        if other:
            named.append(f"ports={LOCAL_HOST}:{','.join(map(str, other))}")
        return "  ".join(parts + named)


@dataclass
class Plan:
    processes: list[LocalProcess]
    credentials_file: Path | None = None  # the gateway's mTLS credentials, made when missing


def make_plan(
    compose: Mapping[str, Any],
    *,
    settings: BaseSettings,
    sandbox: bool,
    only: list[str],
    base_port: int,
    data_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Which compose services to start and how, on this machine."""
    env = os.environ if environ is None else environ
    services: dict[str, Any] = compose["services"]
    local = {name: s for name, s in services.items() if runs_locally(s)}
    in_profile = {n for n, s in local.items() if SANDBOX in (s.get("profiles") or ())}
    available = [n for n in local if not local[n].get("profiles")]
    unknown = sorted(set(only) - set(available))
    if unknown:
        hint = " (the stand-ins come with --sandbox)" if set(unknown) & in_profile else ""
        raise UsageError(
            f"no such service: {', '.join(unknown)}"
            f" (available: {', '.join(available) or 'none'}){hint}"
        )
    chosen = [name for name in available if not only or name in only]
    if sandbox:
        chosen += [name for name in local if name in in_profile]
    if not chosen:
        raise UsageError("no services to start")
    next_port = iter(range(base_port, 65536))
    ports = {name: {p: next(next_port) for p in container_ports(local[name])} for name in chosen}
    forced = set(compose.get(SANDBOX_VARIABLES, ())) if sandbox else set()
    secrets = compose.get("secrets") or {}
    plan = Plan([])
    where = _Where(services, ports, settings, data_dir)
    for name in chosen:
        service = local[name]
        process = LocalProcess(name, [], {}, ports[name])
        mounts = _mounts(service, data_dir, secrets)
        for key, value in environment_of(service).items():
            translated = _translate(key, value, process, mounts, where=where)
            if translated is None:
                continue
            owned = translated != value and (key.endswith(("_PORT", "_HOST")) or value == ANY_HOST)
            if key in env and key not in forced and not owned and key not in _OWN_SETTINGS:
                translated = env[key]  # the operator's environment wins
            process.environment[key] = translated
            if key == "FERRY_CREDENTIALS_FILE" and translated.endswith(".json"):
                plan.credentials_file = Path(translated)
        process.argv = [
            sys.executable if index == 0 else _local_argument(arg, process.ports)
            for index, arg in enumerate(service["command"])
        ]
        process.restarts = service.get("restart") in ("always", "unless-stopped", "on-failure")
        plan.processes.append(process)
    return plan


_OWN_SETTINGS = {"FERRY_AMQP_URL", "FERRY_NAMESPACE"}


@dataclass(frozen=True)
class _Where:
    """What a setting is translated against: the compose services, the local ports of
    those started, ferry up's own settings and its data directory."""

    services: Mapping[str, Any]
    ports: Mapping[str, Mapping[int, int]]
    settings: BaseSettings
    data_dir: Path


def _mounts(
    service: Mapping[str, Any], data_dir: Path, secrets: Mapping[str, Any]
) -> dict[PurePosixPath, Path]:
    """Container path -> local path, for the service's volumes and secrets."""
    mounts: dict[PurePosixPath, Path] = {}
    for volume in service.get("volumes") or ():
        source, target = (
            (str(volume.get("source")), str(volume.get("target")))
            if isinstance(volume, dict)
            else str(volume).split(":")[:2]
        )
        mounts[PurePosixPath(target)] = data_dir / str(source).strip("./")
    for secret in service.get("secrets") or ():
        name = str(secret.get("source")) if isinstance(secret, dict) else str(secret)
        target = str(secret.get("target", name)) if isinstance(secret, dict) else name
        given = (secrets.get(name) or {}).get("file")
        if given:
            mounts[SECRETS_DIR / str(target)] = Path(given)
    return mounts


def _translate(
    key: str,
    value: str,
    process: LocalProcess,
    mounts: Mapping[PurePosixPath, Path],
    *,
    where: _Where,
) -> str | None:
    """One compose setting as it must be on this machine; None: leave it out."""
    if key == "FERRY_AMQP_URL":
        return where.settings.amqp_url
    if key == "FERRY_NAMESPACE":
        return where.settings.namespace
    if value == ANY_HOST:
        return LOCAL_HOST  # on one machine, nobody else needs to reach it
    if key.endswith("_PORT") and value.isdigit() and int(value) in process.ports:
        local = process.ports[int(value)]
        if key != "FERRY_HTTP_PORT":
            process.port_names[local] = key.removeprefix("FERRY_").removesuffix("_PORT").lower()
        return str(local)
    if value.startswith("/"):
        for target, local_path in mounts.items():
            path = PurePosixPath(value)
            if path == target or target in path.parents:
                return str(local_path / path.relative_to(target))
        return value
    parts = urlsplit(value)
    if parts.scheme and parts.hostname in where.services:
        host = str(parts.hostname)
        if host in where.ports:
            mapped = where.ports[host].get(parts.port or 0)
            if mapped is None:
                raise ComposeError(
                    f"compose.yaml: {key} names port {parts.port} of {host},"
                    " which it does not expose"
                )
            return urlunsplit(parts._replace(netloc=f"{LOCAL_HOST}:{mapped}"))
        if parts.scheme in ("postgresql", "postgres"):
            return f"sqlite:///{(where.data_dir / 'tasks.db').resolve()}"
        return None  # a service not started here: the setting's own default applies
    return value


def _local_argument(argument: str, ports: Mapping[int, int]) -> str:
    """A command's argument that names one of the container's ports names the local one;
    one that listens on every address listens on 127.0.0.1."""
    if argument.isdigit() and int(argument) in ports:
        return str(ports[int(argument)])
    if argument == ANY_HOST:
        return LOCAL_HOST
    return argument


def make_credentials(path: Path) -> list[Path]:
    """Development mTLS credentials for the gateway, as `ferry certs --out DIR` makes them."""
    from services.gateway.tls import SERVER_FILE, write_development_certificates

    if path.name != SERVER_FILE:
        raise ComposeError(
            f"the gateway's credentials file {path} is missing; make it with"
            f" `ferry certs --out {path.parent}` (it writes {SERVER_FILE})"
        )
    try:
        return write_development_certificates(path.parent)
    except OSError as exc:
        raise ComposeError(f"cannot write credentials into {path.parent}: {exc.strerror}") from None


def iter_directories(plan: Plan, data_dir: Path) -> Iterator[Path]:
    """The local directories the processes' settings name under the data directory."""
    for process in plan.processes:
        for value in process.environment.values():
            if value.startswith(str(data_dir)) and not value.endswith(".db"):
                yield Path(value)


# -- running it ------------------------------------------------------------------------------


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    compose = read_compose(sandbox_defaults=args.sandbox)
    data_dir = args.data_dir.resolve()
    plan = make_plan(
        compose,
        settings=settings,
        sandbox=args.sandbox,
        only=args.only,
        base_port=args.base_port,
        data_dir=data_dir,
    )
    asyncio.run(check_broker(settings))
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        for directory in iter_directories(plan, data_dir):
            directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot make the data directory {data_dir}: {exc.strerror}") from None
    if plan.credentials_file is not None and not plan.credentials_file.exists():
        make_credentials(plan.credentials_file)
        print(
            f"ferry up: made development credentials for the gateway's mutual TLS in"
            f" {plan.credentials_file.parent}/ (as `ferry certs` does)",
            file=sys.stderr,
        )
    width = max(len(process.name) for process in plan.processes)
    for process in plan.processes:
        print(f"{process.name:<{width}}  {process.describe()}".rstrip())
    sys.stdout.flush()
    supervisor = Supervisor(settings, plan.processes, colored=sys.stdout.isatty())
    return asyncio.run(supervisor.run())


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
    def __init__(self, settings: BaseSettings, plan: list[LocalProcess], *, colored: bool):
        self.settings = settings
        self.plan = plan
        self.colored = colored
        self.width = max(len(process.name) for process in plan)
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.killing = asyncio.Event()
        self.output_closed = False
        self._pumps: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        for index, process in enumerate(self.plan):
            self.children.append(await self._start(index, process))
        self._pumps = [asyncio.create_task(self._pump(child)) for child in self.children]
        failed = await self._wait_for_stop_or_failure()
        clean = await self._stop_all()
        await asyncio.gather(*self._pumps)
        return 0 if clean and not failed else 1

    def _on_signal(self) -> None:
        if self.stopping.is_set():
            self.killing.set()  # impatient second Ctrl-C
        self.stopping.set()

    async def _start(self, index: int, planned: LocalProcess) -> Child:
        name = planned.name
        env = {
            **os.environ,
            **planned.environment,
            "PYTHONUNBUFFERED": "1",  # lines as they happen, not when a buffer fills
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        process = await asyncio.create_subprocess_exec(
            *planned.argv,
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
        """Wait for a stop request or a service failing for good (then True). A service
        compose restarts is started again when it exits, unless it is crash-looping."""
        planned = {p.name: p for p in self.plan}
        started = {c.name: asyncio.get_running_loop().time() for c in self.children}
        quick_deaths: dict[str, int] = {}
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
                    now = asyncio.get_running_loop().time()
                    quick = now - started[child.name] < CRASH_LOOP_SECONDS
                    quick_deaths[child.name] = quick_deaths.get(child.name, 0) + 1 if quick else 0
                    if planned[child.name].restarts and quick_deaths[child.name] < 3:
                        index = self.children.index(child)
                        again = await self._start(index, planned[child.name])
                        self.children[index] = again
                        self._pumps.append(asyncio.create_task(self._pump(again)))
                        started[child.name] = now
                        exits[asyncio.create_task(again.process.wait())] = again
                        self._say(again, "started again (compose: restart)")
                        continue
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
