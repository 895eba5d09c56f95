"""`ferry pipelines ...` and `ferry run ...`: OpenHexa pipelines from the command line.

- `ferry pipelines list`: every pipeline of the launcher's workspace (all pages);
- `ferry pipelines show CODE`: a pipeline and a table of its parameters;
- `ferry pipelines check-config --spec SPEC.json --config CONFIG.json`: validate a config
  offline, exactly as openhexa-sdk will; prints `{"ok": true, "config": {...}}` or
  `{"ok": false, "errors": [...]}` and exits 0 or 1 (no broker needed);
- `ferry run PIPELINE --param key=value ... [--dry-run] [--watch]`: validate against the
  live version, then submit a task whose driving command is `openhexa.runs.launch`
  (`--dry-run` launches nothing; `--watch` follows the task until it ends). An invalid
  config is one line on stderr, every problem on it, exit 2.

Values of `--param` are JSON where they parse as JSON (`3`, `1.5`, `true`, `["a"]`), else
text; a repeated key makes a list, and so does a single value of a `multiple` parameter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from services.cli import connection
from services.cli.errors import CliError, UsageError
from services.openhexa_launcher.runs import specs_of
from services.openhexa_launcher.validation import check_specs, validate_config, with_task_id
from shared.contracts.base import Contract
from shared.contracts.openhexa import (
    PipelineDetail,
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    PipelineParameter,
    RunLaunch,
)
from shared.contracts.tasks import DrivingCommand, TaskSubmit
from shared.messaging import Requester, Unroutable, publish
from shared.settings import BaseSettings
from shared.topology import Names

R = TypeVar("R", bound=Contract)

REQUEST_TIMEOUT = 30.0  # listing every page of a large workspace takes a while
EXIT_INVALID = 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("pipelines", help="list, show and check OpenHexa pipelines")
    sub = parser.add_subparsers(dest="pipelines_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="every pipeline of the workspace")
    listing.add_argument("--name", help="only pipelines whose name contains this")
    listing.set_defaults(run=run_list)

    show = sub.add_parser("show", help="a pipeline and a table of its parameters")
    show.add_argument("code", metavar="CODE")
    show.add_argument("--version", dest="version_id", metavar="ID", help="a version's id")
    show.add_argument("--json", action="store_true", help="the launcher's reply as JSON")
    show.set_defaults(run=run_show)

    check = sub.add_parser(
        "check-config",
        help="validate a config against parameter specs, offline, as openhexa-sdk does",
    )
    check.add_argument("--spec", required=True, metavar="SPEC.json", help="a list of specs")
    check.add_argument("--config", required=True, metavar="CONFIG.json", help="a JSON object")
    check.set_defaults(run=run_check_config)


def add_run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="launch an OpenHexa pipeline as a task")
    run.add_argument("pipeline", metavar="PIPELINE", help="the pipeline's code")
    run.add_argument(
        "--param", "-p", dest="params", action="append", default=[], metavar="KEY=VALUE"
    )
    run.add_argument("--version", dest="version_id", metavar="ID", help="a version's id")
    run.add_argument("--id", dest="task_id", help="the task id (default: a new uuid4 hex)")
    run.add_argument("--dry-run", action="store_true", help="validate only; launch nothing")
    run.add_argument("--watch", action="store_true", help="follow the task until it ends")
    run.set_defaults(run=run_run)


# -- check-config (offline) ------------------------------------------------------------


def run_check_config(settings: BaseSettings, args: argparse.Namespace) -> int:
    del settings  # offline: no broker
    specs = read_specs(args.spec)
    config = read_json(args.config, "--config")
    if not isinstance(config, dict):
        raise UsageError("--config: expected a JSON object")
    problems = check_specs(specs)
    if problems:
        outcome: dict[str, Any] = {"ok": False, "errors": problems}
    else:
        validated = validate_config(specs, config)
        outcome = (
            {"ok": True, "config": validated.config}
            if validated.ok
            else {"ok": False, "errors": validated.messages}
        )
    print(msgspec.json.encode(outcome).decode())
    return 0 if outcome["ok"] else EXIT_INVALID


def read_specs(path: str) -> list[Any]:
    raw = read_json(path, "--spec")
    try:
        parameters = msgspec.convert(raw, list[PipelineParameter], strict=True)
    except msgspec.ValidationError as exc:
        raise UsageError(f"--spec: {exc}") from None
    return specs_of(parameters)


def read_json(path: str, option: str) -> Any:
    try:
        text = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{option}: not valid JSON: {exc}") from None


# -- list / show -------------------------------------------------------------------------


async def ask(client: Requester, message: Contract, reply_type: type[R]) -> R:
    return await connection.ask(
        client, message, reply_type, owner="openhexa_launcher", timeout=REQUEST_TIMEOUT
    )


def run_list(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def go() -> PipelineListReply:
        async with connection.requester(settings) as client:
            reply: PipelineListReply = await ask(
                client, PipelineList(name=args.name), PipelineListReply
            )
            return reply

    reply = asyncio.run(go())
    rows = [
        (p.code, p.name or "", p.type or "", str(p.current_version_number or "-"), p.id)
        for p in reply.pipelines
    ]
    print_table(("CODE", "NAME", "TYPE", "VERSION", "ID"), rows)
    return 0


async def get_pipeline(settings: BaseSettings, code: str, version_id: str | None) -> PipelineDetail:
    async with connection.requester(settings) as client:
        reply: PipelineGetReply = await ask(
            client, PipelineGet(pipeline_code=code, version_id=version_id), PipelineGetReply
        )
    if reply.pipeline is None:
        raise CliError(f"no pipeline {code!r}")
    return reply.pipeline


def run_show(settings: BaseSettings, args: argparse.Namespace) -> int:
    detail = asyncio.run(get_pipeline(settings, args.code, args.version_id))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(detail)).decode())
        return 0
    version = detail.version
    shown = f"version {version.number} ({version.id})" if version else "no version"
    print(f"{detail.code}: {detail.name or ''} [{detail.type or '-'}], {shown}, id {detail.id}")
    if version is None:
        return 0
    rows = [
        (
            p.code,
            p.type + ("[]" if p.multiple else ""),
            "yes" if p.required else "no",
            _shown(p.default),
            _shown(p.choices),
            p.name or "",
        )
        for p in version.parameters
    ]
    print_table(("CODE", "TYPE", "REQUIRED", "DEFAULT", "CHOICES", "NAME"), rows)
    return 0


def _shown(value: Any) -> str:
    return "-" if value is None else msgspec.json.encode(value).decode()


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- run -----------------------------------------------------------------------------------


def parse_params(pairs: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            value = text
        if key in config:
            previous = config[key]
            config[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            config[key] = value
    return config


def as_lists_where_multiple(
    parameters: list[PipelineParameter], config: dict[str, Any]
) -> dict[str, Any]:
    """`--param countries=BE` given once means `["BE"]` when `countries` is `multiple`: a
    command line cannot tell one value from a list of one otherwise."""
    multiple = {p.code for p in parameters if p.multiple}
    return {
        key: [value]
        if key in multiple and not isinstance(value, list) and value is not None
        else value
        for key, value in config.items()
    }


def run_run(settings: BaseSettings, args: argparse.Namespace) -> int:
    config = parse_params(args.params)
    detail = asyncio.run(get_pipeline(settings, args.pipeline, args.version_id))
    if detail.version is None:
        raise CliError(f"pipeline {detail.code} has no version to run")
    config = as_lists_where_multiple(detail.version.parameters, config)
    specs = specs_of(detail.version.parameters)
    task_id = args.task_id or uuid.uuid4().hex
    # Validated as launched: with the task id where the launcher fills it in.
    launched = config
    if detail.task_id_parameter is not None:
        launched = with_task_id(specs, config, task_id, detail.task_id_parameter)
    validated = validate_config(specs, launched)
    if not validated.ok:
        # One line, exit 2, as every usage and validation error of `ferry`.
        problems = "; ".join(validated.messages)
        raise UsageError(f"invalid config for {detail.code}: {problems}")
    if args.dry_run:
        print(msgspec.json.encode({"ok": True, "config": validated.config}).decode())
        return 0
    launch = {"pipeline_id": detail.id, "version_id": args.version_id, "config": config}
    try:
        RunLaunch(task_id=task_id, **launch)
        submit = TaskSubmit.now(
            task_id=task_id,
            kind="openhexa.run",
            name=f"OpenHexa {detail.code}",
            params={"pipeline": detail.code, "config": config},
            command=DrivingCommand(routing_key=RunLaunch.ROUTING_KEY, body=launch),
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    asyncio.run(_submit(settings, submit))
    print(task_id)
    if args.watch:
        from services.cli.tasks import watch

        return asyncio.run(watch(settings, task_id))
    return 0


async def _submit(settings: BaseSettings, submit: TaskSubmit) -> None:
    async with connection.broker(settings) as broker:
        try:
            await publish(broker, Names(settings.namespace), submit)
        except Unroutable:
            raise CliError(
                "no queue is bound to tasks.submit (is the task_tracker running?)"
            ) from None
