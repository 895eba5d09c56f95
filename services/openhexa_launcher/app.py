"""The OpenHexa launcher: the one owner of OpenHexa access.

Answers `openhexa.pipelines.list` (every page of the workspace's pipelines) and
`openhexa.pipelines.get` (a pipeline and a version's parameters); consumes
`openhexa.runs.launch` (a task's driving command: validate the config exactly as
openhexa-sdk will, then launch one run per task, however often the command arrives) and
`openhexa.runs.watch` (scheduled looks at one run, reported on its task until the run
ends); hears `tasks.cancelled` and stops the cancelled task's run.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.openhexa_launcher.client import OpenHexaClient
from services.openhexa_launcher.runs import RunLauncher
from services.openhexa_launcher.settings import LauncherSettings
from shared.contracts.openhexa import (
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    RunLaunch,
    RunWatch,
)
from shared.contracts.tasks import TaskCancelled
from shared.delivery import Delivery
from shared.service import Service
from shared.topology import WorkQueue

SERVICE = "openhexa_launcher"
LIST = WorkQueue.request(SERVICE, "pipelines-list", PipelineList.ROUTING_KEY)
GET = WorkQueue.request(SERVICE, "pipelines-get", PipelineGet.ROUTING_KEY)
LAUNCH = WorkQueue(SERVICE, "launch", RunLaunch.ROUTING_KEY)
WATCH = WorkQueue(SERVICE, "watch", RunWatch.ROUTING_KEY)
CANCELLED = WorkQueue(SERVICE, "cancelled", TaskCancelled.ROUTING_KEY, kind="broadcast")


@dataclass
class Launcher:
    settings: LauncherSettings
    service: Service
    client: OpenHexaClient
    runs: RunLauncher


def build(settings: LauncherSettings | None = None) -> Launcher:
    """The launcher, its handlers registered; nothing is connected until it runs."""
    settings = settings or LauncherSettings.from_env()
    service = Service(SERVICE, settings, description=__doc__)
    client = OpenHexaClient(settings)
    runs = RunLauncher(settings, service, client)
    handles = service.handles

    @handles(LIST, PipelineList)
    async def list_pipelines(body: PipelineList) -> PipelineListReply:
        """Every pipeline of the workspace, all pages."""
        return PipelineListReply(pipelines=await runs.list_pipelines(body.name))

    @handles(GET, PipelineGet)
    async def get_pipeline(body: PipelineGet) -> PipelineGetReply:
        """One pipeline, with the parameters of the version asked for (else the current)."""
        detail = await runs.describe(
            pipeline_id=body.pipeline_id, code=body.pipeline_code, version_id=body.version_id
        )
        return PipelineGetReply(pipeline=detail)

    @handles(LAUNCH, RunLaunch)
    async def launch_run(body: RunLaunch, delivery: Delivery) -> None:
        """Validate the config and launch the task's run, once per task."""
        await runs.launch_run(body, delivery)

    @handles(WATCH, RunWatch)
    async def watch_run(body: RunWatch, delivery: Delivery) -> None:
        """Look at one run, report it on its task, and look again later unless it ended."""
        await runs.watch_run(body, delivery)

    @handles(CANCELLED, TaskCancelled)
    async def stop_cancelled_run(body: TaskCancelled, delivery: Delivery) -> None:
        """Stop the run of a cancelled task."""
        await runs.cancel(body.task_id, delivery)

    service.app.after_shutdown(client.aclose)
    return Launcher(settings, service, client, runs)
