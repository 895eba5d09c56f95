"""The OpenHexa stand-in: the GraphQL API of an OpenHexa server, one seeded workspace.

`POST /graphql/` with `{"query", "variables"}` and `Authorization: Bearer <token>`. A token
it does not know makes the request anonymous, as the real server does (no 401): pipelines,
runs and `me.user` are then invisible. No GraphQL library: the few operations a client sends
are parsed (fields, aliases, arguments, variables with defaults, inline fragments) and each
answer carries exactly the fields selected, in the shapes of the reference:

- `pipelines(workspaceSlug, name, page, perPage)`: `PipelinesPage` (default page size 10);
- `pipelineByCode(workspaceSlug, code)`, `pipeline(id)`: null when missing or not visible;
  `currentVersion { parameters }`, `versions(page, perPage)`, `runs(orderBy, page, perPage)`;
- `runPipeline(input)`: PIPELINE_NOT_FOUND, PIPELINE_VERSION_NOT_FOUND, a permission failure
  as a top-level error, PIPELINE_RUNS_LIMIT_REACHED, INVALID_CONFIG (the server's own type
  checks only: no required, choices or unknown-key checks), in that order;
- `pipelineRun(id)`: queued, then running (progress and messages), then success (with
  outputs) or failed; a run may also fail by heartbeat timeout;
- `stopPipeline(input: {runId})`: terminating, then stopped (the reaper);
  PIPELINE_ALREADY_COMPLETED / PIPELINE_ALREADY_STOPPED / PERMISSION_DENIED;
- `me { user { id } }`.

Knobs (flags, or `POST /_sandbox/openhexa` with a JSON object of them at run time):
`queue_seconds`, `run_seconds`, `stop_seconds` (terminating to stopped), `outcome`
(success | failed | heartbeat | skipped: the runner skips the run instead of starting it),
`heartbeat_seconds`, `runs_limit` (active runs at once; 0: none), `lost_run_answers` (the
next N `runPipeline` calls create their run, then answer 504, as a gateway that gave up after
the server acted). The pipelines `always-fails` and `heartbeat-lost` always end that way.
`DELETE /_sandbox/openhexa/runs/{id}` makes a run vanish (as when its pipeline is deleted).
Latency, 5xx and timeouts: the shared faults (`POST /_sandbox/faults`, see
`services.sandbox.faults`); `GET /_sandbox/openhexa` shows the knobs.
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from services.sandbox import faults as fault_injection
from services.sandbox.server import BANNER, SandboxOptions, StandIn, faults_of

DEFAULT_PORT = 9103
DEFAULT_TOKEN = "openhexa-sandbox-token"
DEFAULT_VIEWER_TOKEN = "openhexa-sandbox-viewer"  # may see, may not run or stop
WORKSPACE = "ferry"
DEFAULT_PAGE_SIZE = 10
ACTIVE = ("queued", "running", "terminating")
OUTCOMES = ("success", "failed", "heartbeat", "skipped")
KNOBS_PATH = "/_sandbox/openhexa"


class GraphQLError(Exception):
    """A top-level GraphQL error: `errors: [{message, extensions?}]`."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# -- the operations' text ----------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<skip>[\s,]+|#[^\n]*)|(?P<spread>\.\.\.)|(?P<punct>[{}()\[\]:!=$@])"
    r'|(?P<string>"(?:\\.|[^"\\])*")|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(?P<name>[_A-Za-z][_0-9A-Za-z]*)"
)


@dataclass
class Field:
    name: str
    alias: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    selections: list[Field | Fragment] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Fragment:
    type_name: str
    selections: list[Field | Fragment]


@dataclass(frozen=True)
class Variable:
    name: str


@dataclass(frozen=True)
class Enum:
    name: str


@dataclass
class Operation:
    kind: str  # query | mutation
    selections: list[Field | Fragment]
    defaults: dict[str, Any]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise GraphQLError(f"Syntax Error: Unexpected character {text[position]!r}.")
            position = match.end()
            kind = match.lastgroup or ""
            if kind != "skip":
                self.tokens.append((kind, match.group()))
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise GraphQLError(f"Syntax Error: Expected {expected or 'more'}, found {token}.")
        self.index += 1
        return token

    def operation(self) -> Operation:
        kind = "query"
        defaults: dict[str, Any] = {}
        if self.peek() in ("query", "mutation"):
            kind = self.take()
            if self.peek() not in ("{", "("):
                self.take()  # the operation's name
            if self.peek() == "(":
                defaults = self.variable_definitions()
        return Operation(kind, self.selection_set(), defaults)

    def variable_definitions(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        self.take("(")
        while self.peek() != ")":
            self.take("$")
            name = self.take()
            self.take(":")
            depth = 0
            while depth or self.peek() not in ("=", ")", "$"):  # the type: skipped
                token = self.take()
                depth += {"[": 1, "]": -1}.get(token, 0)
            if self.peek() == "=":
                self.take("=")
                defaults[name] = self.value()
        self.take(")")
        return defaults

    def selection_set(self) -> list[Field | Fragment]:
        self.take("{")
        selections: list[Field | Fragment] = []
        while self.peek() != "}":
            if self.peek() == "...":
                self.take("...")
                self.take("on")
                type_name = self.take()
                selections.append(Fragment(type_name, self.selection_set()))
                continue
            name = self.take()
            alias = None
            if self.peek() == ":":
                self.take(":")
                alias, name = name, self.take()
            arguments: dict[str, Any] = {}
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    argument = self.take()
                    self.take(":")
                    arguments[argument] = self.value()
                self.take(")")
            children = self.selection_set() if self.peek() == "{" else []
            selections.append(Field(name, alias, arguments, children))
        self.take("}")
        return selections

    def value(self) -> Any:
        kind, token = self.tokens[self.index] if self.index < len(self.tokens) else ("", "")
        if token == "$":
            self.take("$")
            return Variable(self.take())
        if token == "{":
            self.take("{")
            fields_: dict[str, Any] = {}
            while self.peek() != "}":
                key = self.take()
                self.take(":")
                fields_[key] = self.value()
            self.take("}")
            return fields_
        if token == "[":
            self.take("[")
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.take("]")
            return items
        self.take()
        if kind == "string":
            return msgspec.json.decode(token)
        if kind == "number":
            return float(token) if any(c in token for c in ".eE") else int(token)
        return {"true": True, "false": False, "null": None}.get(token, Enum(token))


def parse(text: str) -> Operation:
    return _Parser(text).operation()


def _resolve_value(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {k: _resolve_value(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_value(v, variables) for v in value]
    return value


def project(value: Any, selections: list[Field | Fragment], variables: dict[str, Any]) -> Any:
    """`value` with only the selected fields; a callable field is called with its arguments."""
    if value is None or not selections:
        return value
    if isinstance(value, list):
        return [project(v, selections, variables) for v in value]
    out: dict[str, Any] = {}
    for selection in selections:
        if isinstance(selection, Fragment):
            if value.get("__typename") == selection.type_name:
                out.update(project(value, selection.selections, variables))
            continue
        if selection.name not in value:
            typename = value.get("__typename", "object")
            raise GraphQLError(f"Cannot query field '{selection.name}' on type '{typename}'.")
        found = value[selection.name]
        if callable(found):
            arguments = {k: _resolve_value(v, variables) for k, v in selection.arguments.items()}
            found = found(**arguments)
        out[selection.key] = project(found, selection.selections, variables)
    return out


# -- the workspace -------------------------------------------------------------------------


@dataclass
class Knobs:
    queue_seconds: float = 0.3
    run_seconds: float = 2.0
    stop_seconds: float = 0.5
    heartbeat_seconds: float = 1.0  # a heartbeat-lost run fails after running this long
    outcome: str = "success"
    runs_limit: int = 0  # active runs at once in the workspace; 0: no limit
    lost_run_answers: int = 0  # the next N runPipeline answers are lost after the run exists


@dataclass
class Version:
    id: str
    number: int
    name: str
    parameters: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


@dataclass
class Run:
    id: str
    pipeline: SandboxPipeline
    version: Version
    config: dict[str, Any]
    outcome: str
    created: float
    execution_date: str
    status: str = "queued"
    progress: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    stop_requested: float | None = None
    ended: float | None = None


@dataclass
class SandboxPipeline:
    id: str
    code: str
    name: str
    type: str = "zipFile"
    versions: list[Version] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    outcome: str | None = None  # this pipeline's runs always end so


def _parameter(
    code: str,
    type_: str,
    *,
    name: str | None = None,
    required: bool = True,
    multiple: bool = False,
    choices: list[Any] | None = None,
    default: Any = None,
    help_: str | None = None,
) -> dict[str, Any]:
    return {
        "code": code,
        "name": name or code,
        "type": type_,
        "required": required,
        "multiple": multiple,
        "choices": choices,
        "default": default,
        "help": help_,
        "widget": None,
        "connection": None,
        "directory": None,
    }


def seeded_pipelines(seed: int) -> list[SandboxPipeline]:
    """A workspace of more than ten pipelines whose parameters cover every type,
    `multiple`, `choices`, defaults and required; ids are stable for a seed."""
    P = _parameter
    every_type = [
        P("country", "str", choices=["BE", "BF", "CD"], help_="ISO code"),
        P("label", "str", required=False, default="weekly"),
        P("tags", "str", multiple=True, required=False),
        P("year", "int", default=2026),
        P("months", "int", multiple=True, choices=list(range(1, 13)), required=False),
        P("threshold", "float", default=0.5),
        P("weights", "float", multiple=True, required=False),
        P("dry_run", "bool", default=False),
        P("api_key", "secret", required=False),
        P("input_dataset", "dataset", required=False),
        P("input_file", "file", required=False),
        P("dhis2", "dhis2", required=False),
        P("iaso", "iaso", required=False),
        P("warehouse", "postgresql", required=False),
        P("bucket", "s3", required=False),
        P("gcs_bucket", "gcs", required=False),
        P("custom", "custom", required=False),
    ]
    specs: list[tuple[str, str, str, list[dict[str, Any]], str | None]] = [
        ("all-types", "Every parameter type", "zipFile", every_type, None),
        ("ferry-tasked", "Declares task_id", "zipFile",
         [P("task_id", "str", required=False), P("countries", "str", multiple=True,
          choices=["BE", "BF", "CD"], default=["BE"]), P("year", "int", default=2026)], None),
        ("untagged", "Declares no task id", "zipFile", [P("region", "str")], None),
        ("no-parameters", "No parameters", "zipFile", [], None),
        ("always-fails", "Always fails", "zipFile", [P("task_id", "str", required=False)],
         "failed"),
        ("heartbeat-lost", "Loses its heartbeat", "zipFile",
         [P("task_id", "str", required=False)], "heartbeat"),
        ("weekly-report", "Weekly report", "notebook", [P("week", "int")], None),
    ]  # fmt: skip
    specs += [
        (f"extract-{n:02d}", f"Extract {n:02d}", "zipFile",
         [P("task_id", "str", required=False), P("limit", "int", default=100 * n)], None)
        for n in range(1, 8)
    ]  # fmt: skip
    namespace = uuid.UUID(int=seed)
    pipelines = []
    for code, name, kind, parameters, outcome in specs:
        pipeline = SandboxPipeline(
            str(uuid.uuid5(namespace, code)), code, name, kind, outcome=outcome
        )
        pipeline.versions.append(
            Version(str(uuid.uuid5(namespace, f"{code}/v1")), 1, "v1", parameters)
        )
        pipelines.append(pipeline)
    # A second version, so a run can name one that is not the latest.
    tasked = pipelines[1]
    tasked.versions.append(
        Version(
            str(uuid.uuid5(namespace, "ferry-tasked/v2")),
            2,
            "v2",
            [*tasked.versions[0].parameters, P("note", "str", required=False)],
            created=1.0,
        )
    )
    return pipelines


class Workspace:
    """The server's state, advanced lazily: every look at a run first catches it up with
    the clock, as the runner and the reaper would have."""

    def __init__(
        self, pipelines: list[SandboxPipeline], knobs: Knobs, clock: Callable[[], float]
    ) -> None:
        self.slug = WORKSPACE
        self.pipelines = pipelines
        self.knobs = knobs
        self.clock = clock

    def by_id(self, pipeline_id: str) -> SandboxPipeline | None:
        return next((p for p in self.pipelines if p.id == pipeline_id), None)

    def run(self, run_id: str) -> Run | None:
        for pipeline in self.pipelines:
            for run in pipeline.runs:
                if run.id == run_id:
                    self.advance(run)
                    return run
        return None

    def forget(self, run_id: str) -> bool:
        """Remove a run, as if it had never been (False when there was none)."""
        for pipeline in self.pipelines:
            kept = [run for run in pipeline.runs if run.id != run_id]
            if len(kept) != len(pipeline.runs):
                pipeline.runs = kept
                return True
        return False

    def active_runs(self) -> int:
        count = 0
        for pipeline in self.pipelines:
            for run in pipeline.runs:
                self.advance(run)
                count += run.status in ACTIVE
        return count

    def advance(self, run: Run) -> None:
        now, knobs = self.clock(), self.knobs
        if run.status in ("success", "failed", "stopped", "skipped"):
            return
        if run.stop_requested is not None:
            run.status = "terminating"
            if now - run.stop_requested >= knobs.stop_seconds:
                self._end(run, "stopped", f"Stopped by user at {_iso_now()}", "WARNING")
            return
        started = run.created + knobs.queue_seconds
        if now < started:
            return
        if run.outcome == "skipped":
            self._end(run, "skipped", "Skipped: the runner did not start this run", "WARNING")
            return
        if run.status == "queued":
            run.status = "running"
            run.messages.append(_message("Starting pipeline", "INFO"))
        running_for = now - started
        if run.outcome == "heartbeat" and running_for >= knobs.heartbeat_seconds:
            self._end(run, "failed", "Killed due to heartbeat timeout", "ERROR")
            return
        fraction = min(running_for / knobs.run_seconds, 1.0) if knobs.run_seconds else 1.0
        progress = int(fraction * 100)
        if progress // 25 > run.progress // 25 and progress < 100:
            run.messages.append(_message(f"Processed {progress}%", "INFO"))
        run.progress = max(run.progress, min(progress, 99))
        if fraction < 1.0 or run.outcome == "heartbeat":
            return
        if run.outcome == "failed":
            self._end(run, "failed", "Error: the pipeline raised an exception", "ERROR")
        else:
            run.progress = 100
            run.outputs.append(
                {
                    "__typename": "GenericOutput",
                    "genericName": "report",
                    "genericType": "LINK",
                    "genericUri": f"https://openhexa.sandbox/runs/{run.id}/report.html",
                }
            )
            self._end(run, "success", "Pipeline completed", "INFO")

    def _end(self, run: Run, status: str, message: str, priority: str) -> None:
        run.status = status
        run.ended = self.clock()
        run.messages.append(_message(message, priority))


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


def _message(text: str, priority: str) -> dict[str, Any]:
    return {"message": text, "priority": priority, "timestamp": _iso_now()}


# -- the schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    user: str | None  # None: anonymous
    may_run: bool


def _page(
    items: list[Any], page: int | None, per_page: int | None, typename: str
) -> dict[str, Any]:
    per = per_page or DEFAULT_PAGE_SIZE
    number = page or 1
    total = len(items)
    return {
        "__typename": typename,
        "items": items[(number - 1) * per : number * per],
        "pageNumber": number,
        "totalPages": max(1, -(-total // per)),
        "totalItems": total,
    }


def config_type_problems(parameters: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """openhexa-app's `validate_config_types` (PR #1780): types only; unknown keys and nulls
    skipped, `multiple` lists element by element."""
    problems = []
    for parameter in parameters:
        value = config.get(parameter["code"])
        if value is None:
            continue
        values = value if parameter["multiple"] and isinstance(value, list) else [value]
        kind = parameter["type"]
        if not all(_server_type_ok(kind, v) for v in values):
            problems.append(f"'{parameter['code']}' (expected {kind})")
    return problems


def _server_type_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


class Schema:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def root(self, caller: Caller, kind: str) -> dict[str, Any]:
        if kind == "mutation":
            return {
                "__typename": "Mutation",
                "runPipeline": lambda input=None: self.run_pipeline(caller, input or {}),
                "stopPipeline": lambda input: self.stop_pipeline(caller, input),
            }
        return {
            "__typename": "Query",
            "me": {"__typename": "Me", "user": self._user(caller)},
            "pipelines": lambda workspaceSlug, name=None, page=1, perPage=10, **_: self.pipelines(
                caller, workspaceSlug, name, page, perPage
            ),
            "pipelineByCode": lambda workspaceSlug, code: self._visible(
                caller, next((p for p in self._listed(workspaceSlug) if p.code == code), None)
            ),
            "pipeline": lambda id: self._visible(caller, self.workspace.by_id(id)),
            "pipelineRun": lambda id: self._run_view(caller, self.workspace.run(id)),
        }

    def _user(self, caller: Caller) -> dict[str, Any] | None:
        if caller.user is None:
            return None
        return {"__typename": "User", "id": caller.user, "email": f"{caller.user}@sandbox"}

    def _listed(self, slug: str) -> list[SandboxPipeline]:
        return self.workspace.pipelines if slug == self.workspace.slug else []

    def pipelines(
        self, caller: Caller, slug: str, name: str | None, page: int, per_page: int
    ) -> dict[str, Any]:
        visible = [] if caller.user is None else self._listed(slug)
        if name:
            visible = [p for p in visible if name.lower() in p.name.lower()]
        return _page([self._pipeline_view(p) for p in visible], page, per_page, "PipelinesPage")

    def _visible(self, caller: Caller, pipeline: SandboxPipeline | None) -> Any:
        return None if pipeline is None or caller.user is None else self._pipeline_view(pipeline)

    def _pipeline_view(self, pipeline: SandboxPipeline) -> dict[str, Any]:
        def runs(orderBy: str = "EXECUTION_DATE_DESC", page: int = 1, perPage: int = 10) -> Any:
            for run in pipeline.runs:
                self.workspace.advance(run)
            newest_first = sorted(pipeline.runs, key=lambda r: r.created, reverse=True)
            ordered = newest_first if orderBy.endswith("DESC") else newest_first[::-1]
            views = [self._run_fields(r) for r in ordered]
            return _page(views, page, perPage, "PipelineRunPage")

        def versions(page: int = 1, perPage: int = 10) -> Any:
            newest_first = sorted(pipeline.versions, key=lambda v: v.number, reverse=True)
            views = [self._version_view(v) for v in newest_first]
            return _page(views, page, perPage, "PipelineVersionPage")

        current = max(pipeline.versions, key=lambda v: v.number) if pipeline.versions else None
        return {
            "__typename": "Pipeline",
            "id": pipeline.id,
            "code": pipeline.code,
            "name": pipeline.name,
            "type": pipeline.type,
            "config": {},
            "currentVersion": self._version_view(current) if current else None,
            "versions": versions,
            "runs": runs,
            "permissions": {"__typename": "PipelinePermissions", "run": True,
                            "stopPipeline": True},
        }  # fmt: skip

    def _version_view(self, version: Version) -> dict[str, Any]:
        return {
            "__typename": "PipelineVersion",
            "id": version.id,
            "versionNumber": version.number,
            "versionName": version.name,
            "name": version.name,
            "config": version.config,
            "timeout": None,
            "parameters": [{"__typename": "PipelineParameter", **p} for p in version.parameters],
        }

    def _run_view(self, caller: Caller, run: Run | None) -> Any:
        return None if run is None or caller.user is None else self._run_fields(run)

    def _run_fields(self, run: Run) -> dict[str, Any]:
        duration = None if run.ended is None else int(run.ended - run.created)
        return {
            "__typename": "PipelineRun",
            "id": run.id,
            "run_id": f"manual__{run.created:.2f}",
            "status": run.status,
            "config": run.config,
            "executionDate": run.execution_date,
            "duration": duration,
            "progress": run.progress,
            "logs": "",
            "messages": [{"__typename": "PipelineRunMessage", **m} for m in run.messages],
            "outputs": run.outputs,
            "triggerMode": "manual",
            "stoppedBy": None,
            "version": self._version_view(run.version),
        }

    def run_pipeline(self, caller: Caller, given: dict[str, Any]) -> dict[str, Any]:
        def failed(code: str) -> dict[str, Any]:
            return {"__typename": "RunPipelineResult", "success": False, "errors": [code],
                    "run": None}  # fmt: skip

        pipeline = self.workspace.by_id(str(given.get("id")))
        if pipeline is None or caller.user is None:
            return failed("PIPELINE_NOT_FOUND")
        version_id = given.get("versionId")
        if version_id is None:
            version = max(pipeline.versions, key=lambda v: v.number, default=None)
        else:
            version = next((v for v in pipeline.versions if v.id == version_id), None)
        if version is None:
            return failed("PIPELINE_VERSION_NOT_FOUND")
        if not caller.may_run:
            raise GraphQLError("You do not have permission to perform this action")
        limit = self.workspace.knobs.runs_limit
        if limit and self.workspace.active_runs() >= limit:
            return failed("PIPELINE_RUNS_LIMIT_REACHED")
        provided = given.get("config")
        if not isinstance(provided, dict):
            return failed("INVALID_CONFIG")
        if config_type_problems(version.parameters, provided):
            return failed("INVALID_CONFIG")
        config = {
            **{k: v for k, v in version.config.items() if v is not None},
            **{k: v for k, v in provided.items() if v is not None},
        }
        run = Run(
            id=str(uuid.uuid4()),
            pipeline=pipeline,
            version=version,
            config=config,
            outcome=pipeline.outcome or self.workspace.knobs.outcome,
            created=self.workspace.clock(),
            execution_date=_iso_now(),
        )
        pipeline.runs.append(run)
        return {"__typename": "RunPipelineResult", "success": True, "errors": [],
                "run": self._run_fields(run)}  # fmt: skip

    def stop_pipeline(self, caller: Caller, given: dict[str, Any]) -> dict[str, Any]:
        def result(*errors: str) -> dict[str, Any]:
            return {"__typename": "StopPipelineResult", "success": not errors,
                    "errors": list(errors)}  # fmt: skip

        run = self.workspace.run(str((given or {}).get("runId")))  # no user filter here
        if run is None:
            return result("PIPELINE_NOT_FOUND")
        if run.status in ("success", "failed"):
            return result("PIPELINE_ALREADY_COMPLETED")
        if run.status in ("terminating", "stopped"):
            return result("PIPELINE_ALREADY_STOPPED")
        if not caller.may_run:
            return result("PERMISSION_DENIED")
        run.stop_requested = self.workspace.clock()
        run.status = "terminating"
        return result()


# -- the HTTP side -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenHexaOptions:
    token: str = DEFAULT_TOKEN
    viewer_token: str = DEFAULT_VIEWER_TOKEN


SCHEMA = web.AppKey("openhexa_schema", Schema)
TOKENS = web.AppKey("openhexa_tokens", OpenHexaOptions)


def graphql_error(status: int, message: str) -> web.Response:
    return web.json_response({"errors": [{"message": message}]}, status=status)


def _caller(request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
    tokens = request.app[TOKENS]
    if token and token == tokens.token:
        return Caller("sandbox-editor", may_run=True)
    if token and token == tokens.viewer_token:
        return Caller("sandbox-viewer", may_run=False)
    return Caller(None, may_run=False)  # a bad or missing token: anonymous, never 401


async def handle_graphql(request: web.Request) -> web.Response:
    try:
        body = msgspec.json.decode(await request.read())
        query = body["query"]
        variables = body.get("variables") or {}
        if not isinstance(query, str) or not isinstance(variables, dict):
            raise TypeError
    except (msgspec.DecodeError, KeyError, TypeError):
        return graphql_error(400, "Must provide query string.")
    try:
        operation = parse(query)
    except GraphQLError as exc:
        return graphql_error(400, str(exc))
    variables = {**operation.defaults, **variables}
    schema = request.app[SCHEMA]
    root = schema.root(_caller(request), operation.kind)
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for selection in operation.selections:
        if isinstance(selection, Fragment):
            continue
        try:
            data.update(project(root, [selection], variables))
        except GraphQLError as exc:
            data[selection.key] = None
            error: dict[str, Any] = {"message": str(exc), "path": [selection.key]}
            if exc.code:
                error["extensions"] = {"code": exc.code}
            errors.append(error)
        except TypeError as exc:  # a missing or unknown argument
            data[selection.key] = None
            errors.append({"message": f"Argument error: {exc}", "path": [selection.key]})
    knobs = schema.workspace.knobs
    if knobs.lost_run_answers > 0 and any(
        isinstance(s, Field) and s.name == "runPipeline" for s in operation.selections
    ):
        # The run exists now, but its caller never learns it: only a look-up can find it.
        knobs.lost_run_answers -= 1
        return graphql_error(504, "Gateway Timeout (sandbox: the answer was lost)")
    answer: dict[str, Any] = {"data": data}
    if errors:
        answer["errors"] = errors
    return web.json_response(answer)


async def change_knobs(request: web.Request) -> web.Response:
    knobs = request.app[SCHEMA].workspace.knobs
    try:
        changes = msgspec.json.decode(await request.read())
        if not isinstance(changes, dict):
            raise TypeError("a JSON object of knobs")
        names = {f.name for f in fields(Knobs)}
        for name, value in changes.items():
            if name not in names:
                raise TypeError(f"no knob {name!r} (knobs: {', '.join(sorted(names))})")
            if name == "outcome" and value not in OUTCOMES:
                raise TypeError(f"outcome: one of {', '.join(OUTCOMES)}")
            setattr(knobs, name, value)
    except (msgspec.DecodeError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(dict(vars(knobs)))


async def show_knobs(request: web.Request) -> web.Response:
    return web.json_response(dict(vars(request.app[SCHEMA].workspace.knobs)))


async def forget_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    if not request.app[SCHEMA].workspace.forget(run_id):
        return web.json_response({"error": f"no run {run_id}"}, status=404)
    return web.json_response({"forgotten": run_id})


def create_app(
    options: OpenHexaOptions,
    knobs: Knobs,
    faults: fault_injection.Faults,
    *,
    seed: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    app = web.Application()
    app[SCHEMA] = Schema(Workspace(seeded_pipelines(seed), knobs, clock))
    app[TOKENS] = options
    fault_injection.install(app, faults, graphql_error)
    app.router.add_post("/graphql/", handle_graphql)
    app.router.add_post(KNOBS_PATH, change_knobs)
    app.router.add_get(KNOBS_PATH, show_knobs)
    app.router.add_delete(KNOBS_PATH + "/runs/{run_id}", forget_run)
    app[BANNER] = lambda url: (
        f"openhexa: listening on {url} (GraphQL at {url}/graphql/, workspace {WORKSPACE});"
        f" token {options.token} (viewer: {options.viewer_token})"
    )
    return app


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--openhexa-token",
        "--token",
        dest="openhexa_token",
        metavar="TOKEN",
        help=f"the token accepted ({DEFAULT_TOKEN})",
    )
    group.add_argument("--openhexa-run-seconds", type=float, metavar="S", help="run length (2)")
    group.add_argument("--openhexa-queue-seconds", type=float, metavar="S", help="queued (0.3)")
    group.add_argument("--openhexa-outcome", choices=OUTCOMES, help="how runs end (success)")
    group.add_argument(
        "--openhexa-runs-limit", type=int, metavar="N", help="active runs at once (0: no limit)"
    )


def from_options(options: SandboxOptions) -> web.Application:
    defaults = Knobs()
    knobs = Knobs(
        queue_seconds=options.flag("openhexa_queue_seconds", defaults.queue_seconds),
        run_seconds=options.flag("openhexa_run_seconds", defaults.run_seconds),
        outcome=options.flag("openhexa_outcome", defaults.outcome),
        runs_limit=options.flag("openhexa_runs_limit", defaults.runs_limit),
    )
    tokens = OpenHexaOptions(token=options.flag("openhexa_token", DEFAULT_TOKEN))
    return create_app(tokens, knobs, faults_of(options), seed=options.seed)


STAND_IN = StandIn(
    name="openhexa",
    default_port=DEFAULT_PORT,
    summary="OpenHexa GraphQL API",
    build=from_options,
    add_arguments=add_arguments,
)
