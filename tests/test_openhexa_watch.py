"""Watching OpenHexa runs: the poll interval's back-off, the maximum run duration, every
way a run ends (skipped too), injected faults during a launch and a watch, and a watch that
cannot go on (it ends the task ERRORED, where Iaso's ends SUCCESS). A real RabbitMQ, the
tracker and the launcher in-process, the OpenHexa stand-in on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.openhexa_launcher.runs import poll_delay
from services.openhexa_launcher.settings import LauncherSettings
from shared.settings import BaseSettings, SettingsError
from tests.conftest import Cleanup
from tests.support.waiting import eventually
from tests.test_openhexa_launcher import World, run_id_of, world

# -- the poll interval -------------------------------------------------------------------------


def test_the_poll_interval_grows_with_the_runs_age_up_to_the_maximum() -> None:
    settings = LauncherSettings(poll_interval=5.0, poll_max_interval=60.0, poll_backoff=0.1)
    delays = {age: poll_delay(settings, age) for age in (0, 30, 100, 400, 3600, 86_400)}
    assert delays == {0: 5.0, 30: 5.0, 100: 10.0, 400: 40.0, 3600: 60.0, 86_400: 60.0}
    ages = range(0, 2000, 7)
    steps = [poll_delay(settings, age) for age in ages]
    assert steps == sorted(steps)  # never shorter for an older run


def test_a_negative_back_off_is_refused() -> None:
    with pytest.raises(SettingsError, match="FERRY_POLL_BACKOFF"):
        LauncherSettings(poll_backoff=-0.1).check()


async def count_polls(w: World) -> dict[str, int]:
    """Counts the launcher's looks at each run (`pipelineRun`), by run id, from now on."""
    polls: dict[str, int] = {}
    client = w.launcher.runs.client
    look = client.run

    async def counted(run_id: str) -> Any:
        polls[run_id] = polls.get(run_id, 0) + 1
        return await look(run_id)

    client.run = counted  # type: ignore[method-assign]
    return polls


async def launched(w: World, task_id: str, timeout: float = 10) -> str:
    """The run id, once the task records it."""

    async def run_id() -> str | None:
        task = await w.task(task_id)
        ok = task is not None and isinstance(task.result, dict) and "run_id" in str(task.result)
        return run_id_of(task) if ok and task is not None else None

    found: str = await eventually(run_id, timeout=timeout, interval=0.1)
    return found


async def sandbox_delete(w: World, path: str) -> None:
    async with httpx.AsyncClient() as http:
        (await http.delete(w.sandbox.url + path, timeout=5)).raise_for_status()


async def sandbox_faults(w: World) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(w.sandbox.url + "/_sandbox/faults", timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state


async def test_a_long_run_is_polled_less_often_than_a_fixed_interval_would(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    # The interval is twice the run's age (1 s at least, 4 s at most): looks at about 1 s
    # and 3 s, then 7 s; a fixed 1 s interval would look four times in the same four seconds.
    window = 4.0
    overrides = {"poll_interval": 1.0, "poll_max_interval": 4.0, "poll_backoff": 2.0}
    async with world(base_settings, cleanup, tmp_path, **overrides) as w:
        await w.sandbox_post("/_sandbox/openhexa", {"run_seconds": 60})
        polls = await count_polls(w)
        started = datetime.now(UTC)
        await w.submit("long-run", pipeline_code="extract-01")
        run_id = await launched(w, "long-run")
        await eventually(
            lambda: (datetime.now(UTC) - started).total_seconds() >= window, timeout=window + 1
        )
        fixed_interval_polls = int(window / w.settings.poll_interval)
        assert 1 <= polls.get(run_id, 0) < fixed_interval_polls - 1
        task = await w.task("long-run")
        assert task is not None and task.status == "RUNNING"


# -- the maximum run duration ------------------------------------------------------------------


async def test_a_run_past_the_maximum_duration_is_stopped_and_its_task_errs(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    async with world(base_settings, cleanup, tmp_path, max_run_duration=1.5) as w:
        await w.sandbox_post("/_sandbox/openhexa", {"run_seconds": 60})
        await w.submit("too-long", pipeline_code="extract-02")
        task = await w.ended("too-long")
        assert task.status == "ERRORED"
        assert "exceeded the maximum duration of 1.5s" in (task.progress_message or "")
        assert "it was stopped" in (task.progress_message or "")
        (run,) = await w.runs_of("extract-02")
        assert run.id == run_id_of(task)
        assert run.status in ("terminating", "stopped")  # stopPipeline was sent


# -- how a run ends ----------------------------------------------------------------------------


@pytest.fixture
async def w(base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path) -> AsyncIterator[World]:
    async with world(base_settings, cleanup, tmp_path) as it:
        yield it


async def test_a_skipped_run_ends_its_task_skipped(w: World) -> None:
    await w.sandbox_post("/_sandbox/openhexa", {"outcome": "skipped"})
    await w.submit("skipped", pipeline_code="extract-03")
    task = await w.ended("skipped")
    assert task.status == "SKIPPED"
    assert task.result["status"] == "skipped"
    (run,) = await w.runs_of("extract-03")
    assert run.status == "skipped" and run.id == run_id_of(task)


# -- injected faults ---------------------------------------------------------------------------


@pytest.fixture
async def quick(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> AsyncIterator[World]:
    """A world whose launcher gives up on a held request after half a second."""
    async with world(base_settings, cleanup, tmp_path, http_timeout=0.5) as it:
        yield it


async def test_faults_during_a_launch_still_start_exactly_one_run(quick: World) -> None:
    w = quick
    # 503 twice (the retry budget is spent: the launch is parked), then a request held past
    # the timeout (retried in-process); then runPipeline creates the run but its answer is
    # lost: the launch is parked again, and its next delivery must adopt that run. The
    # pipeline declares no task id, so the run is recognised by its exact config.
    await w.sandbox_post(
        "/_sandbox/faults",
        [{"status": 503, "count": 2}, {"timeout": True, "count": 1, "hold_seconds": 5}],
    )
    await w.sandbox_post("/_sandbox/openhexa", {"lost_run_answers": 1})
    await w.submit("faulty-launch", pipeline_code="untagged", config={"region": "east"})
    task = await w.ended("faulty-launch", timeout=30)
    assert task.status == "SUCCESS", task.progress_message
    assert (await sandbox_faults(w))["rules"] == []  # every fault was met
    runs = await w.runs_of("untagged")
    assert [r.id for r in runs] == [run_id_of(task)]


async def test_faults_during_a_watch_still_end_the_task_success(quick: World) -> None:
    w = quick
    await w.sandbox_post("/_sandbox/openhexa", {"run_seconds": 2})
    await w.submit("faulty-watch", pipeline_code="ferry-tasked", config={"countries": ["BF"]})
    run_id = await launched(w, "faulty-watch")
    await w.sandbox_post(
        "/_sandbox/faults",
        [
            {"status": 502, "count": 2, "path_prefix": "/graphql/"},
            {"timeout": True, "count": 1, "hold_seconds": 5, "path_prefix": "/graphql/"},
        ],
    )

    async def faults_met() -> bool:
        return (await sandbox_faults(w))["rules"] == []

    await eventually(faults_met, timeout=15, interval=0.2)  # the watch met them, not us
    task = await w.ended("faulty-watch", timeout=30)
    assert task.status == "SUCCESS", task.progress_message
    assert run_id_of(task) == run_id
    runs = await w.runs_of("ferry-tasked")
    assert [r.id for r in runs] == [run_id]


# -- a watch that cannot go on -----------------------------------------------------------------


@pytest.mark.parametrize("failure", ["run-vanished", "http-400"])
async def test_a_watch_that_hits_a_permanent_error_errs_never_succeeds(
    w: World, failure: str
) -> None:
    await w.sandbox_post("/_sandbox/openhexa", {"run_seconds": 60})
    await w.submit("lost-" + failure, pipeline_code="extract-04")
    run_id = await launched(w, "lost-" + failure)
    if failure == "run-vanished":
        await sandbox_delete(w, f"/_sandbox/openhexa/runs/{run_id}")
        expected = f"run {run_id} not found in OpenHexa"
    else:
        await w.sandbox_post("/_sandbox/faults", {"status": 400, "count": 1})
        expected = f"watching run {run_id} failed: OpenHexa answered HTTP 400 Bad Request"
    task = await w.ended("lost-" + failure)
    assert task.status == "ERRORED"
    assert expected in (task.progress_message or "")
