"""Launching, watching and stopping OpenHexa runs for tasks: the launcher's domain.

A task's run is recorded on the task itself (`result["openhexa_run"]`, see `RunRecord`), so
every decision starts from the task (`tasks.get`):

- **launch** (idempotent per task): a task that already names its run is only watched; a
  config is validated exactly as the SDK will (an invalid one ends the task ERRORED with
  every problem, and nothing is launched); the task id goes into the config only where the
  pipeline declares the `task_id_parameter`. Before `runPipeline`, the launcher looks for a
  run of this task that a crashed attempt may have started (by that declared key, or, when
  the pipeline declares none, by the exact config among the runs started since the attempt
  noted it was launching), and adopts it instead of starting a second one;
- **watch**: a delayed `openhexa.runs.watch` per look, carrying the run id, so a restart
  loses no watch; it follows that run (never the pipeline's latest) and reports it on the
  task; the interval grows with the run's age, and a run older than `max_run_duration` is
  stopped and its task ERRORED;
- **stop**: a task being cancelled gets its run stopped (`stopPipeline`), on the
  `tasks.cancelled` broadcast and, in case the broadcast was missed, on every watch; a run
  that already ended is reported as it ended;
- **runs limit**: `PIPELINE_RUNS_LIMIT_REACHED` parks the launch (`publish_later`, backing
  off) and says so on the task, instead of failing it.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from services.openhexa_launcher.client import (
    OpenHexaClient,
    OpenHexaError,
    Pipeline,
    Run,
    Version,
)
from services.openhexa_launcher.settings import LauncherSettings
from services.openhexa_launcher.validation import ParameterSpec, validate_config, with_task_id
from shared.contracts.openhexa import (
    PipelineDetail,
    PipelineParameter,
    PipelineSummary,
    PipelineVersion,
    RunLaunch,
    RunWatch,
)
from shared.contracts.tasks import TaskGet, TaskGetReply, TaskStatus, TaskUpdate, TaskView
from shared.delivery import Delivery
from shared.messaging import RemoteError
from shared.service import Service

log = logging.getLogger("ferry.openhexa_launcher")

RESULT_KEY = "openhexa_run"
RUNS_LIMIT = "PIPELINE_RUNS_LIMIT_REACHED"
ENDED = frozenset({"success", "failed", "stopped", "skipped"})
STOPPABLE = frozenset({"queued", "running"})
PROGRESS_END = 100  # a run's progress is a percentage
# What no retry will change: a missing pipeline, version or run (LookupError), a GraphQL
# refusal or a refused token (OpenHexaError), an HTTP 4xx answer (raised by ExternalApi).
PERMANENT = (LookupError, OpenHexaError, httpx.HTTPStatusError)


@dataclass(frozen=True)
class RunRecord:
    """What the task records about its run. `run_id` is None while a launch is under way
    (`launching_since` says since when: the window in which a crashed attempt's run is
    looked for)."""

    pipeline_id: str
    run_id: str | None = None
    version_id: str | None = None
    watch_id: str | None = None
    launching_since: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def of(cls, task: TaskView) -> RunRecord | None:
        result = task.result
        if not isinstance(result, dict) or not isinstance(result.get(RESULT_KEY), dict):
            return None
        fields = result[RESULT_KEY]
        if not isinstance(fields.get("pipeline_id"), str):
            return None
        return cls(**{f.name: fields.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Report:
    """What one look at a run says about its task."""

    status: TaskStatus
    progress: int
    message: str
    result: dict[str, Any] | None = None

    @property
    def ended(self) -> bool:
        return self.status.is_terminal


def report_of(run: Run, record: RunRecord) -> Report:
    """The task's state for the run's state (OpenHexa's lowercase statuses)."""
    latest = run.messages[-1].message if run.messages else None
    status = run.status.lower()
    if status in ("queued", "running"):
        return Report(TaskStatus.RUNNING, run.progress, latest or f"run {status}")
    if status == "terminating":
        return Report(TaskStatus.RUNNING, run.progress, "stopping")
    summary = {
        RESULT_KEY: record.as_json(),
        "status": status,
        "messages": [msgspec.structs.asdict(m) for m in run.messages],
    }
    if status == "success":
        summary["outputs"] = run.outputs
        return Report(TaskStatus.SUCCESS, PROGRESS_END, latest or "run succeeded", summary)
    if status == "failed":
        errors = [
            m.message for m in run.messages if (m.priority or "").upper() in ("ERROR", "CRITICAL")
        ]
        why = (errors or [m.message for m in run.messages] or ["no message"])[-1]
        return Report(TaskStatus.ERRORED, run.progress, f"run failed: {why}", summary)
    if status == "stopped":
        return Report(TaskStatus.KILLED, run.progress, "run stopped", summary)
    if status == "skipped":
        return Report(TaskStatus.SKIPPED, run.progress, "run skipped", summary)
    return Report(TaskStatus.RUNNING, run.progress, f"run status {run.status!r} not known yet")


def poll_delay(settings: LauncherSettings, age_seconds: float) -> float:
    """The wait before the next look: short for a young run, growing with its age."""
    grown = max(settings.poll_interval, age_seconds * settings.poll_backoff)
    return min(settings.poll_max_interval, grown)


def runs_limit_delay(settings: LauncherSettings, waits: int) -> float:
    return min(settings.runs_limit_max_delay, settings.runs_limit_delay * 2.0 ** min(waits, 20))


def specs_of(parameters: list[PipelineParameter]) -> list[ParameterSpec]:
    return [
        ParameterSpec(
            code=p.code,
            type=p.type,
            name=p.name,
            choices=p.choices,
            default=p.default,
            required=p.required,
            multiple=p.multiple,
            disables=p.disables,
            disable_when=p.disable_when,
        )
        for p in parameters
    ]


def detail_of(pipeline: Pipeline, version: Version | None) -> PipelineDetail:
    chosen = version or pipeline.current_version
    return PipelineDetail(
        id=pipeline.id,
        code=pipeline.code,
        name=pipeline.name,
        type=pipeline.type,
        version=None
        if chosen is None
        else PipelineVersion(
            id=chosen.id,
            number=chosen.version_number,
            name=chosen.name,
            parameters=chosen.parameters,
        ),
    )


def summary_of(pipeline: Pipeline) -> PipelineSummary:
    version = pipeline.current_version
    return PipelineSummary(
        id=pipeline.id,
        code=pipeline.code,
        name=pipeline.name,
        type=pipeline.type,
        current_version_id=version.id if version else None,
        current_version_number=version.version_number if version else None,
    )


class RunLauncher:
    def __init__(
        self, settings: LauncherSettings, service: Service, client: OpenHexaClient
    ) -> None:
        self.settings = settings
        self.service = service
        self.client = client

    # -- pipelines --------------------------------------------------------------------------

    async def describe(
        self, *, pipeline_id: str | None, code: str | None, version_id: str | None
    ) -> PipelineDetail:
        pipeline = await self.client.pipeline(pipeline_id=pipeline_id, code=code)
        version = None
        if version_id is not None and (
            pipeline.current_version is None or pipeline.current_version.id != version_id
        ):
            version = await self.client.version(pipeline.id, version_id)
        detail = detail_of(pipeline, version)
        parameter = self.settings.task_id_parameter
        if detail.version is not None and parameter in {p.code for p in detail.version.parameters}:
            detail.task_id_parameter = parameter
        return detail

    async def list_pipelines(self, name: str | None) -> list[PipelineSummary]:
        return [summary_of(p) async for p in self.client.pipelines(name)]

    # -- launch -----------------------------------------------------------------------------

    async def launch_run(self, launch: RunLaunch, delivery: Delivery) -> None:
        task = await self.task(launch.task_id)
        if task is None or task.status.is_terminal:
            return  # nothing to do for a task that is gone or over
        record = RunRecord.of(task)
        if record is not None and record.run_id is not None:
            # Launched before (a redelivery or a stall re-drive): only make sure it is watched.
            await self._watch(delivery, task.id, record, started_at=task.started_at)
            return
        try:
            await self._launch(task, record, launch, delivery)
        except PERMANENT as exc:
            await self._report(delivery, task.id, TaskStatus.ERRORED, _failure(exc))

    async def _launch(
        self, task: TaskView, record: RunRecord | None, launch: RunLaunch, delivery: Delivery
    ) -> None:
        detail = await self.describe(
            pipeline_id=launch.pipeline_id, code=launch.pipeline_code, version_id=launch.version_id
        )
        if detail.version is None:
            message = f"pipeline {detail.code} has no version to run"
            await self._report(delivery, task.id, TaskStatus.ERRORED, message)
            return
        specs = specs_of(detail.version.parameters)
        config = with_task_id(specs, launch.config, task.id, self.settings.task_id_parameter)
        validated = validate_config(specs, config)
        if not validated.ok:
            problems = validated.messages
            await self._report(
                delivery,
                task.id,
                TaskStatus.ERRORED,
                f"invalid config ({len(problems)} problem(s)): " + "; ".join(problems),
                result={"errors": problems, "pipeline_id": detail.id},
            )
            return
        marked = self.settings.task_id_parameter in {s.code for s in specs}
        run = await self._find_launched_run(detail.id, validated.config, record, marked, task.id)
        if task.should_be_killed:
            if run is not None:
                await self.client.stop_pipeline(run.id)
            await self._report(delivery, task.id, TaskStatus.KILLED, "cancelled before the run")
            return
        if run is None:
            launching = RunRecord(
                pipeline_id=detail.id,
                version_id=launch.version_id,
                launching_since=(record.launching_since if record else None) or _now_text(),
            )
            await self._report(
                delivery, task.id, TaskStatus.RUNNING, "launching", result=_recorded(launching)
            )
            outcome = await self.client.run_pipeline(detail.id, launch.version_id, validated.config)
            if not outcome.success or outcome.run is None:
                await self._refused(delivery, launch, outcome.errors)
                return
            run = outcome.run
        new = RunRecord(
            pipeline_id=detail.id,
            run_id=run.id,
            version_id=launch.version_id,
            watch_id=uuid.uuid4().hex,
        )
        log.info("run launched", extra={"task_id": task.id, "run_id": run.id})
        await self._report(
            delivery, task.id, TaskStatus.RUNNING, f"run {run.id} {run.status}",
            result=_recorded(new), progress=0,
        )  # fmt: skip
        await self._schedule_watch(delivery, task.id, new, datetime.now(UTC), polls=0)

    async def _find_launched_run(
        self,
        pipeline_id: str,
        config: dict[str, Any],
        record: RunRecord | None,
        marked: bool,
        task_id: str,
    ) -> Run | None:
        """A run a crashed attempt of this launch started, if any.

        With the task id in the config (`marked`), the run is recognised by it, however old.
        Without it, only an attempt that noted it was launching can have started one, and
        only a run started since then with exactly this config is taken for it.
        """
        if not marked and (record is None or record.launching_since is None):
            return None
        since = None
        if record is not None and record.launching_since is not None:
            since = datetime.fromisoformat(record.launching_since) - timedelta(
                seconds=self.settings.launch_lookback
            )
        key = self.settings.task_id_parameter
        sent = {k: v for k, v in config.items() if v is not None}
        async for run in self.client.runs(pipeline_id):
            started = _parse_time(run.execution_date)
            if since is not None and started is not None and started < since:
                return None  # newest first: nothing older can be ours
            if marked:
                if run.config.get(key) == config.get(key):
                    return run
            elif all(run.config.get(k) == v for k, v in sent.items()):
                return run
        return None

    async def _refused(self, delivery: Delivery, launch: RunLaunch, errors: list[str]) -> None:
        if RUNS_LIMIT in errors:
            delay = runs_limit_delay(self.settings, launch.limit_waits)
            message = f"waiting: the workspace's runs limit is reached; trying again in {delay:g}s"
            await self._report(delivery, launch.task_id, TaskStatus.RUNNING, message)
            later = msgspec.structs.replace(launch, limit_waits=launch.limit_waits + 1)
            await delivery.publish_later(later, delay)
            return
        codes = ", ".join(errors) or "no reason given"
        message = f"OpenHexa refused the run: {codes}"
        await self._report(delivery, launch.task_id, TaskStatus.ERRORED, message)

    # -- watch ------------------------------------------------------------------------------

    async def watch_run(self, watch: RunWatch, delivery: Delivery) -> None:
        task = await self.task(watch.task_id)
        if task is None:
            return
        record = RunRecord.of(task)
        if record is not None and record.watch_id not in (None, watch.watch_id):
            return  # a newer launch of this task watches it now
        if record is None or record.run_id != watch.run_id:
            record = RunRecord(
                pipeline_id=watch.pipeline_id, run_id=watch.run_id, watch_id=watch.watch_id
            )
        age = (datetime.now(UTC) - watch.started_at).total_seconds()
        try:
            report = await self.examine(task, record, age=age)
        except PERMANENT as exc:
            # Iaso returns from its poll loop here and its decorator marks the task SUCCESS;
            # a watch that cannot go on says why and ends the task ERRORED instead.
            if task.status.is_terminal:
                return
            message = f"watching run {record.run_id} failed: {_failure(exc)}"
            await self._report(delivery, task.id, TaskStatus.ERRORED, message)
            return
        if report is not None:
            await self._report(
                delivery, task.id, report.status, report.message,
                progress=report.progress, result=report.result,
            )  # fmt: skip
            if report.ended:
                return
        elif task.status.is_terminal:
            return
        await self._schedule_watch(
            delivery, task.id, record, watch.started_at, polls=watch.polls + 1
        )

    async def examine(self, task: TaskView, record: RunRecord, *, age: float) -> Report | None:
        """Look at the task's run once: stop it if the task is being cancelled (or already
        over) or the run is too old; say what the task should show (None: nothing new)."""
        assert record.run_id is not None
        run = await self.client.run(record.run_id)
        if run is None:
            return Report(TaskStatus.ERRORED, 0, f"run {record.run_id} not found in OpenHexa")
        status = run.status.lower()
        if status in STOPPABLE and (task.should_be_killed or task.status.is_terminal):
            await self._stop(record.run_id)
            return (
                None
                if task.status.is_terminal
                else Report(TaskStatus.RUNNING, run.progress, "stopping")
            )
        # A run being stopped for a cancel ends KILLED, however old it is.
        overdue = age > self.settings.max_run_duration and not task.should_be_killed
        if status not in ENDED and overdue:
            if status in STOPPABLE:
                await self._stop(record.run_id)
            limit = f"{self.settings.max_run_duration:g}s"
            return Report(
                TaskStatus.ERRORED,
                run.progress,
                f"run {record.run_id} exceeded the maximum duration of {limit}; it was stopped",
                {RESULT_KEY: record.as_json(), "status": status},
            )
        if task.status.is_terminal:
            return None
        return report_of(run, record)

    async def _stop(self, run_id: str) -> None:
        outcome = await self.client.stop_pipeline(run_id)
        if not outcome.success:
            # ALREADY_COMPLETED / ALREADY_STOPPED: it ended (or is ending) on its own; the
            # next look reports how.
            log.info("stop not needed", extra={"run_id": run_id, "errors": outcome.errors})

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, task_id: str, delivery: Delivery) -> None:
        """The `tasks.cancelled` broadcast: stop the task's run now, and report the task."""
        task = await self.task(task_id)
        if task is None:
            return
        record = RunRecord.of(task)
        if record is None or record.run_id is None:
            return  # not launched yet: the launch sees the cancel before it launches
        report = await self.examine(task, record, age=0.0)
        if report is not None and (report.ended or report.message == "stopping"):
            await self._report(
                delivery, task.id, report.status, report.message,
                progress=report.progress, result=report.result,
            )  # fmt: skip

    # -- the task ---------------------------------------------------------------------------

    async def task(self, task_id: str) -> TaskView | None:
        try:
            reply = await self.service.request(TaskGet(task_id=task_id), TaskGetReply)
        except RemoteError as exc:
            if "no such task" in str(exc):
                log.warning("no such task", extra={"task_id": task_id})
                return None
            raise
        return reply.task

    async def _watch(
        self, delivery: Delivery, task_id: str, record: RunRecord, started_at: datetime | None
    ) -> None:
        """Start a new chain of watches for an already launched run (the older chain, if
        any, ends when it sees the task name this one)."""
        renewed = RunRecord(
            pipeline_id=record.pipeline_id,
            run_id=record.run_id,
            version_id=record.version_id,
            watch_id=uuid.uuid4().hex,
        )
        await self._report(delivery, task_id, None, None, result=_recorded(renewed))
        await self._schedule_watch(
            delivery, task_id, renewed, started_at or datetime.now(UTC), polls=0
        )

    async def _schedule_watch(
        self,
        delivery: Delivery,
        task_id: str,
        record: RunRecord,
        started_at: datetime,
        *,
        polls: int,
    ) -> None:
        assert record.run_id is not None and record.watch_id is not None
        watch = RunWatch(
            task_id=task_id,
            run_id=record.run_id,
            pipeline_id=record.pipeline_id,
            watch_id=record.watch_id,
            started_at=started_at,
            polls=polls,
        )
        age = (datetime.now(UTC) - started_at).total_seconds()
        await delivery.publish_later(watch, poll_delay(self.settings, age))

    async def _report(
        self,
        delivery: Delivery,
        task_id: str,
        status: TaskStatus | None,
        message: str | None,
        *,
        progress: int | None = None,
        result: Any = None,
    ) -> None:
        await delivery.publish(
            TaskUpdate(
                task_id=task_id,
                status=status.value if status is not None else None,
                progress_value=progress,
                end_value=PROGRESS_END if progress is not None else None,
                progress_message=message[:4000] if message else None,
                result=result,
                observed_at=datetime.now(UTC),
            )
        )


def _failure(exc: BaseException) -> str:
    """One line on a permanent failure, for the task's message."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return f"OpenHexa answered HTTP {response.status_code} {response.reason_phrase}"
    return str(exc) or type(exc).__name__


def _recorded(record: RunRecord) -> dict[str, Any]:
    return {RESULT_KEY: record.as_json()}


def _now_text() -> str:
    return datetime.now(UTC).isoformat()


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
