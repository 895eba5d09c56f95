"""The OpenHexa GraphQL client: the few operations the launcher needs, in the shapes of
the reference (`POST {server}/graphql/`, `Authorization: Bearer <token>`).

Transport failures are `shared.http.ExternalApi`'s: timeouts, connection errors, 429 and
5xx retried in-process, then raised for the runtime to park. A GraphQL `errors` answer is
permanent (`OpenHexaError`); `UNAUTHENTICATED` is `TokenRejected`. The server does not
answer 401 to a bad token: it serves the request anonymously, so a pipeline or a run that
comes back null is checked against `me` to tell "not found" from "token not accepted".

`runPipeline` is sent once (no in-process retry): a timed-out launch may have created the
run, and only the launcher's look-up of the task's run may decide to launch again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import msgspec

from services.openhexa_launcher.settings import LauncherSettings
from shared.contracts.openhexa import PipelineParameter
from shared.http import ExternalApi
from shared.retry import PermanentError, RetryPolicy, TransientError

GRAPHQL_PATH = "/graphql/"

PARAMETER_FIELDS = (
    "code name type required multiple choices default help widget connection directory"
)
VERSION_FIELDS = f"id name versionNumber parameters {{ {PARAMETER_FIELDS} }}"
PIPELINE_FIELDS = f"id code name type currentVersion {{ {VERSION_FIELDS} }}"

PIPELINES = """
query Pipelines($workspaceSlug: String!, $name: String, $page: Int = 1, $perPage: Int = 10) {
  pipelines(workspaceSlug: $workspaceSlug, name: $name, page: $page, perPage: $perPage) {
    pageNumber totalPages totalItems
    items { id code name type currentVersion { id name versionNumber } }
  }
}"""
PIPELINE_BY_CODE = f"""
query PipelineByCode($workspaceSlug: String!, $code: String!) {{
  pipelineByCode(workspaceSlug: $workspaceSlug, code: $code) {{ {PIPELINE_FIELDS} }}
}}"""
PIPELINE = f"""
query Pipeline($id: UUID!) {{
  pipeline(id: $id) {{ {PIPELINE_FIELDS} }}
}}"""
PIPELINE_VERSIONS = f"""
query PipelineVersions($id: UUID!, $page: Int!, $perPage: Int!) {{
  pipeline(id: $id) {{
    id versions(page: $page, perPage: $perPage) {{ totalPages items {{ {VERSION_FIELDS} }} }}
  }}
}}"""
PIPELINE_RUNS = """
query PipelineRuns($id: UUID!, $page: Int!, $perPage: Int!) {
  pipeline(id: $id) {
    id runs(orderBy: EXECUTION_DATE_DESC, page: $page, perPage: $perPage) {
      totalPages items { id status config executionDate }
    }
  }
}"""
PIPELINE_RUN = """
query PipelineRun($id: UUID!) {
  pipelineRun(id: $id) {
    id status progress executionDate duration config
    messages { message priority timestamp }
    outputs {
      __typename
      ... on GenericOutput { genericName genericType genericUri }
      ... on BucketObject { name key type }
      ... on DatabaseTable { name }
    }
  }
}"""
RUN_PIPELINE = """
mutation runPipeline($input: RunPipelineInput) {
  runPipeline(input: $input) { success errors run { id status } }
}"""
STOP_PIPELINE = """
mutation stopPipeline($input: StopPipelineInput!) {
  stopPipeline(input: $input) { success errors }
}"""
ME = "query Me { me { user { id } } }"


class OpenHexaError(PermanentError):
    """OpenHexa refused the operation (a GraphQL error): retrying will not change it."""


class TokenRejected(OpenHexaError):
    """The server served the request anonymously: the token is wrong or expired."""

    def __init__(self) -> None:
        super().__init__(
            "OpenHexa did not accept the token (the request was served anonymously);"
            " check FERRY_OPENHEXA_TOKEN"
        )


class Version(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    id: str
    version_number: int
    name: str | None = None
    parameters: list[PipelineParameter] = []


class Pipeline(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    id: str
    code: str
    name: str | None = None
    type: str | None = None
    current_version: Version | None = None


class PipelinesPage(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    items: list[Pipeline]
    total_pages: int
    total_items: int = 0
    page_number: int = 1


class RunMessage(msgspec.Struct, forbid_unknown_fields=False):
    message: str
    priority: str | None = None
    timestamp: str | None = None


class Run(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    """A `PipelineRun`: `status` is one of queued, running, success, failed, stopped,
    terminating, skipped (lowercase); `progress` 0-100."""

    id: str
    status: str
    progress: int = 0
    config: dict[str, Any] = {}
    execution_date: str | None = None
    duration: int | None = None
    messages: list[RunMessage] = []
    outputs: list[dict[str, Any]] = []


class RunPipelineResult(msgspec.Struct, forbid_unknown_fields=False):
    success: bool
    errors: list[str] = []
    run: Run | None = None


class StopPipelineResult(msgspec.Struct, forbid_unknown_fields=False):
    success: bool
    errors: list[str] = []


class _Page(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    total_pages: int
    items: list[Any]


class OpenHexaClient:
    def __init__(self, settings: LauncherSettings, api: ExternalApi | None = None) -> None:
        self.workspace = settings.openhexa_workspace
        self.page_size = settings.page_size
        headers = {"Authorization": f"Bearer {settings.openhexa_token}"}
        self.api = api or ExternalApi.from_settings(
            settings,
            settings.openhexa_url.rstrip("/"),
            name="openhexa",
            headers=headers if settings.openhexa_token else None,
        )

    # -- pipelines ------------------------------------------------------------------------

    async def pipelines(self, name: str | None = None) -> AsyncIterator[Pipeline]:
        """Every pipeline of the workspace, page after page (not only the first ten)."""
        page = 1
        while True:
            data = await self._execute(
                PIPELINES,
                {
                    "workspaceSlug": self.workspace,
                    "name": name,
                    "page": page,
                    "perPage": self.page_size,
                },
            )
            listing = msgspec.convert(data["pipelines"], PipelinesPage)
            if page == 1 and not listing.items:
                await self.check_token()  # anonymous callers see an empty workspace
            for pipeline in listing.items:
                yield pipeline
            if page >= listing.total_pages or not listing.items:
                return
            page += 1

    async def pipeline(
        self, *, pipeline_id: str | None = None, code: str | None = None
    ) -> Pipeline:
        """One pipeline with its current version's parameters. Raises `LookupError` when
        it is missing or not visible, `TokenRejected` when the token was not accepted."""
        if pipeline_id is not None:
            data = await self._execute(PIPELINE, {"id": pipeline_id})
            found = data.get("pipeline")
        else:
            data = await self._execute(
                PIPELINE_BY_CODE, {"workspaceSlug": self.workspace, "code": code}
            )
            found = data.get("pipelineByCode")
        if found is None:
            await self.check_token()
            what = f"id {pipeline_id}" if pipeline_id is not None else f"code {code!r}"
            raise LookupError(
                f"no pipeline with {what} in workspace {self.workspace!r} (or not visible)"
            )
        return msgspec.convert(found, Pipeline)

    async def version(self, pipeline_id: str, version_id: str) -> Version:
        """One version of a pipeline, with its parameters; `LookupError` when missing."""
        async for item in self._pages(PIPELINE_VERSIONS, pipeline_id, "versions"):
            if item.get("id") == version_id:
                return msgspec.convert(item, Version)
        raise LookupError(f"pipeline {pipeline_id} has no version {version_id}")

    # -- runs -----------------------------------------------------------------------------

    async def runs(self, pipeline_id: str) -> AsyncIterator[Run]:
        """The pipeline's runs, newest first, page after page."""
        async for item in self._pages(PIPELINE_RUNS, pipeline_id, "runs"):
            yield msgspec.convert(item, Run)

    async def run(self, run_id: str) -> Run | None:
        """The run, or None when it is missing or not visible (checked against the token)."""
        data = await self._execute(PIPELINE_RUN, {"id": run_id})
        found = data.get("pipelineRun")
        if found is None:
            await self.check_token()
            return None
        return msgspec.convert(found, Run)

    async def run_pipeline(
        self, pipeline_id: str, version_id: str | None, config: dict[str, Any]
    ) -> RunPipelineResult:
        run_input: dict[str, Any] = {"id": pipeline_id, "config": config}
        if version_id is not None:
            run_input["versionId"] = version_id
        data = await self._execute(
            RUN_PIPELINE, {"input": run_input}, retry=RetryPolicy(attempts=1)
        )
        return msgspec.convert(data["runPipeline"], RunPipelineResult)

    async def stop_pipeline(self, run_id: str) -> StopPipelineResult:
        data = await self._execute(STOP_PIPELINE, {"input": {"runId": run_id}})
        return msgspec.convert(data["stopPipeline"], StopPipelineResult)

    async def check_token(self) -> None:
        """Raise `TokenRejected` when the server sees us as anonymous."""
        data = await self._execute(ME, {})
        if (data.get("me") or {}).get("user") is None:
            raise TokenRejected()

    # -- transport ------------------------------------------------------------------------

    async def _pages(self, query: str, pipeline_id: str, field: str) -> AsyncIterator[Any]:
        page = 1
        while True:
            data = await self._execute(
                query, {"id": pipeline_id, "page": page, "perPage": self.page_size}
            )
            if data.get("pipeline") is None:
                await self.check_token()
                raise LookupError(f"no pipeline with id {pipeline_id} (or not visible)")
            listing = msgspec.convert(data["pipeline"][field], _Page)
            for item in listing.items:
                yield item
            if page >= listing.total_pages or not listing.items:
                return
            page += 1

    async def _execute(
        self, query: str, variables: dict[str, Any], *, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        response = await self.api.post(
            GRAPHQL_PATH, json={"query": query, "variables": variables}, retry=retry
        )
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            # A cut or garbled answer from a proxy or an overloaded server: worth a retry.
            raise TransientError("OpenHexa answered with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise TransientError("OpenHexa answered with a JSON body that is not an object")
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            if (first.get("extensions") or {}).get("code") == "UNAUTHENTICATED":
                raise TokenRejected()
            raise OpenHexaError(f"OpenHexa: {first.get('message') or errors[0]}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise TransientError("OpenHexa answered without data")
        return data

    async def aclose(self) -> None:
        await self.api.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
