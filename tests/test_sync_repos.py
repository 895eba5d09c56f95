"""Repository management through the collector (`hf.repos.*`, and `ferry hf ...`), against
the Hub stand-in, without hf-micro's bugs (reference B4): `private` as a boolean, orgs read
as objects, the `spaces` path, and each status keeping its meaning."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from services.hf_collector import cli
from services.sandbox import hf_hub
from shared.contracts.hf import (
    HfRepoCreate,
    HfRepoCreateReply,
    HfRepoDelete,
    HfRepoDeleteReply,
    HfRepoVisibility,
    HfRepoVisibilityReply,
    HfWhoami,
    HfWhoamiReply,
)
from shared.messaging import RemoteError
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_sync_support import collector_settings, running, stand_ins

pytestmark = pytest.mark.timeout(60)


async def test_whoami_create_visibility_delete_through_the_collector(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    with stand_ins(5) as stands:
        async with running(base_settings, stands, cleanup, tmp_path, uploader=False) as sync:
            assert sync.collector is not None
            ask = sync.collector.service.request
            me = await ask(HfWhoami(), HfWhoamiReply)
            assert (me.name, me.type, me.orgs) == ("sandbox-user", "user", ["ferry-sandbox"])

            created = await ask(
                HfRepoCreate(repo_id="ferry-sandbox/new-data", private=True), HfRepoCreateReply
            )
            assert created.url.endswith("/datasets/ferry-sandbox/new-data")
            catalogue = stands.hub.app[hf_hub.HUB].catalogue
            dataset = stands.thread.call_soon(lambda: catalogue.get("ferry-sandbox/new-data"))
            assert dataset is not None and dataset.private is True
            with pytest.raises(RemoteError, match=r"^AlreadyExists: "):
                await ask(HfRepoCreate(repo_id="ferry-sandbox/new-data"), HfRepoCreateReply)

            await ask(
                HfRepoVisibility(repo_id="ferry-sandbox/new-data", private=False),
                HfRepoVisibilityReply,
            )
            assert dataset.private is False  # a boolean, not the string "false"

            space = HfRepoCreate(
                repo_id="sandbox-user/demo", type="space", private=False, space_sdk="gradio"
            )
            assert (await ask(space, HfRepoCreateReply)).url.endswith("/spaces/sandbox-user/demo")
            await ask(
                HfRepoVisibility(repo_id="sandbox-user/demo", type="space", private=True),
                HfRepoVisibilityReply,
            )
            assert catalogue.other_repos[("space", "sandbox-user/demo")] is True

            await ask(HfRepoDelete(repo_id="ferry-sandbox/new-data"), HfRepoDeleteReply)
            with pytest.raises(RemoteError, match=r"^NotFound: "):
                await ask(HfRepoDelete(repo_id="ferry-sandbox/new-data"), HfRepoDeleteReply)
            with pytest.raises(RemoteError, match=r"^HubRefused: .*403"):
                await ask(HfRepoCreate(repo_id="someone-else/x"), HfRepoCreateReply)

            # The operator's side: `ferry hf whoami` prints the account in one line.
            parser = argparse.ArgumentParser()
            cli.add_parser(parser.add_subparsers(dest="command"))
            args = parser.parse_args(["hf", "whoami"])
            settings = replace(base_settings)
            assert await asyncio.to_thread(args.run, settings, args) == 0


async def test_a_bad_token_is_one_line_naming_the_setting(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    with stand_ins(5) as stands:
        settings = collector_settings(base_settings, stands, hf_token="hf_wrong")
        async with running(
            base_settings, stands, cleanup, tmp_path, collector=settings, uploader=False
        ) as sync:
            assert sync.collector is not None
            with pytest.raises(RemoteError, match=r"refused the token.*FERRY_HF_TOKEN"):
                await sync.collector.service.request(HfWhoami(), HfWhoamiReply)
            task = await sync.finished(await sync.submit("all"))
            assert task.status == "ERRORED"
            assert "FERRY_HF_TOKEN" in (task.progress_message or "")
