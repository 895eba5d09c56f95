"""The OpenHexa stand-in on its own, as an operator starts it:
`python -m services.sandbox openhexa --port 0 --token T`. Its first line says where it
listens and which token it takes; a bad token is served anonymously (no 401, as the real
server does) and sees nothing; a viewer may look but not run (a top-level GraphQL error)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.sandbox.openhexa import DEFAULT_VIEWER_TOKEN

TOKEN = "stand-in-token-T"
FIRST_LINE_TIMEOUT = 20.0
RUN = """mutation runPipeline($input: RunPipelineInput) {
  runPipeline(input: $input) { success errors run { id status } } }"""
LIST = """query { pipelines(workspaceSlug: "ferry", perPage: 100) { totalItems items { id code } }
  me { user { id } } }"""


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, str]]:
    """The stand-in's process: its first line, and its base URL read from that line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.sandbox", "openhexa", "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        # readline blocks: bound it by the process's own lifetime, with a timer that kills it.
        timer = threading.Timer(FIRST_LINE_TIMEOUT, process.kill)
        timer.start()
        try:
            first_line = process.stdout.readline().rstrip("\n")
        finally:
            timer.cancel()
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+) ", first_line)
        assert found is not None, first_line
        yield first_line, found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def graphql(
    url: str, token: str | dict[str, str], query: str, variables: Any = None
) -> httpx.Response:
    """A GraphQL request with `Authorization: Bearer TOKEN`, or with exactly these headers."""
    headers = token if isinstance(token, dict) else {"Authorization": f"Bearer {token}"}
    return httpx.post(
        url + "/graphql/", json={"query": query, "variables": variables or {}}, headers=headers,
        timeout=5,
    )  # fmt: skip


def test_the_first_line_says_where_it_listens_and_the_token(stand_in: tuple[str, str]) -> None:
    first_line, url = stand_in
    assert first_line.startswith(f"openhexa: listening on {url} ")
    assert f"GraphQL at {url}/graphql/" in first_line
    assert f"token {TOKEN} " in first_line


def test_the_token_given_sees_every_pipeline(stand_in: tuple[str, str]) -> None:
    response = graphql(stand_in[1], TOKEN, LIST)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["pipelines"]["totalItems"] == 14 and data["me"]["user"] is not None


@pytest.mark.parametrize(
    "token",
    [
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Token {TOKEN}"},  # the right token, not as a Bearer token
        {"X-Api-Key": TOKEN},  # OpenHexa has no X-Api-Key
        {},
    ],
    ids=["wrong-token", "wrong-scheme", "x-api-key", "none"],
)
def test_a_bad_token_is_anonymous_and_sees_nothing(
    stand_in: tuple[str, str], token: dict[str, str]
) -> None:
    url = stand_in[1]
    listed = graphql(url, token, LIST)
    assert listed.status_code == 200  # anonymous, never 401
    assert "errors" not in listed.json()
    assert listed.json()["data"] == {
        "pipelines": {"totalItems": 0, "items": []},
        "me": {"user": None},
    }
    pipeline_id = graphql(url, TOKEN, LIST).json()["data"]["pipelines"]["items"][0]["id"]
    by_id = graphql(
        url, token, "query($id: UUID!) { pipeline(id: $id) { id } }", {"id": pipeline_id}
    )
    assert by_id.json() == {"data": {"pipeline": None}}  # null: not visible to the caller
    # runPipeline's first check: a pipeline the caller cannot see is PIPELINE_NOT_FOUND.
    run = graphql(url, token, RUN, {"input": {"id": pipeline_id, "config": {}}})
    assert run.json() == {
        "data": {"runPipeline": {"success": False, "errors": ["PIPELINE_NOT_FOUND"], "run": None}}
    }


def test_a_viewer_may_not_run_a_top_level_permission_error(stand_in: tuple[str, str]) -> None:
    url = stand_in[1]
    pipelines = graphql(url, DEFAULT_VIEWER_TOKEN, LIST).json()["data"]["pipelines"]["items"]
    no_parameters = next(p["id"] for p in pipelines if p["code"] == "no-parameters")
    run = graphql(url, DEFAULT_VIEWER_TOKEN, RUN, {"input": {"id": no_parameters, "config": {}}})
    body = run.json()
    # Raised, not returned: a top-level error, not the code PERMISSION_DENIED.
    assert body["data"] == {"runPipeline": None}
    assert body["errors"][0]["message"] == "You do not have permission to perform this action"
    assert "PERMISSION_DENIED" not in run.text
