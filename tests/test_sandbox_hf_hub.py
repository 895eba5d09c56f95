"""The HF Hub stand-in, driven by the real `huggingface_hub` client and by plain httpx.

Every server listens on 127.0.0.1 only, in a background thread (the client is synchronous);
catalogues are small so that every listing takes a handful of requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    DisabledRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from services.sandbox.hf_catalogue import SANDBOX_ORG, SANDBOX_USER, Catalogue, ListingQuery
from services.sandbox.hf_hub import (
    DEFAULT_TOKEN,
    HUB,
    INVALID_CREDENTIALS,
    HubOptions,
    catalogue_summary,
    create_app,
)
from services.sandbox.server import Listening, ServerThread

pytestmark = pytest.mark.timeout(60)

CATALOGUE_SIZE = 400
PAGE_SIZE = 50


def serve(options: HubOptions) -> ServerThread:
    return ServerThread([("hf-hub", create_app(options), 0)])


@pytest.fixture(scope="module")
def hub() -> Iterator[Listening]:
    options = HubOptions(datasets=CATALOGUE_SIZE, seed=7, quota=10**6, anonymous_quota=10**6,
                         page_size=PAGE_SIZE)  # fmt: skip
    with serve(options) as (listening,):
        yield listening


@pytest.fixture(scope="module")
def summary(hub: Listening) -> dict[str, int]:
    return httpx.get(f"{hub.url}/_sandbox/catalogue").json()  # type: ignore[no-any-return]


def api(hub: Listening, token: str | bool = DEFAULT_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def test_listing_pages_through_every_visible_dataset(
    hub: Listening, summary: dict[str, int]
) -> None:
    listed = list(api(hub).list_datasets(token=False))
    anonymous = [d.id for d in listed]
    assert len(anonymous) == summary["public"] == len(set(anonymous))
    assert sum(not d.disabled for d in listed) == summary["listed"]
    with_token = list(api(hub).list_datasets())
    assert len(with_token) == summary["visible_with_token"]
    private = [d for d in with_token if d.private]
    assert private and {d.author for d in private} <= {SANDBOX_USER, SANDBOX_ORG}
    # `_id` is not a field of DatasetInfo: the client keeps it as an attribute.
    assert all(len(d._id) == 24 for d in with_token)  # type: ignore[attr-defined]


def test_link_is_absolute_and_carries_every_parameter(hub: Listening) -> None:
    response = httpx.get(f"{hub.url}/api/datasets", params={"author": "google", "limit": 2})
    link = response.headers["Link"]
    assert link.startswith(f"<{hub.url}/api/datasets?") and link.endswith('>; rel="next"')
    assert "author=google" in link and "limit=2" in link and "cursor=" in link
    following = httpx.get(link[1 : link.index(">")])
    assert following.status_code == 200
    assert not {d["id"] for d in following.json()} & {d["id"] for d in response.json()}


def test_listing_filters_sort_limit_and_fields(hub: Listening) -> None:
    client = api(hub)
    by_google = list(client.list_datasets(author="google"))
    assert by_google and all(d.author == "google" for d in by_google)
    found = list(client.list_datasets(search="chess"))
    assert found and all("chess" in d.id for d in found)
    tagged = list(client.list_datasets(filter="language:fr"))
    assert tagged and all("language:fr" in d.tags for d in tagged)
    gated = list(client.list_datasets(gated=True))
    assert gated and all(d.gated in ("auto", "manual") for d in gated)
    liked = [d.likes for d in client.list_datasets(sort="likes", limit=120)]
    assert len(liked) == 120 and liked == sorted(liked, reverse=True)
    newest = [d.last_modified for d in client.list_datasets(sort="last_modified", limit=60)]
    assert newest == sorted(newest, reverse=True)  # type: ignore[type-var]
    plain = next(iter(client.list_datasets(limit=1)))
    assert plain.card_data is None and plain.siblings is None
    full = next(iter(client.list_datasets(full=True, limit=1)))
    assert full.siblings and full.tags
    expanded = next(iter(client.list_datasets(expand=["createdAt"], limit=1)))
    assert expanded.created_at is not None and expanded.downloads is None
    both = httpx.get(f"{hub.url}/api/datasets", params={"full": "true", "expand": "likes"})
    assert both.status_code == 400 and both.headers["X-Error-Message"]


def test_catalogue_has_the_awkward_cases(hub: Listening) -> None:
    catalogue = hub.app[HUB].catalogue
    live = [d for d in catalogue.datasets if d is not None and not d.private and not d.disabled]
    client = api(hub)

    no_date = next(d for d in live if d.created_at is None)
    assert client.dataset_info(no_date.repo_id).created_at is None

    huge = next(d for d in live if d.huge_description)
    info = client.dataset_info(huge.repo_id)
    assert info.description is not None and len(info.description) > 65_535

    listed = next(d for d in live if d.generated and d.license_shape == 1)
    license_value = client.dataset_info(listed.repo_id).card_data["license"]  # type: ignore[index]
    assert isinstance(license_value, list) and len(license_value) == 2
    single = next(d for d in live if d.generated and d.license_shape == 0)
    assert isinstance(client.dataset_info(single.repo_id).card_data["license"], str)  # type: ignore[index]

    gated = next(d for d in live if d.gated)
    assert client.dataset_info(gated.repo_id).gated in ("auto", "manual")
    old = next(d for d in live if d.created_at is not None and d.created_at < 1646263744)
    raw = httpx.get(f"{hub.url}/api/datasets/{old.repo_id}").json()
    assert raw["createdAt"] == "2022-03-02T23:29:04.000Z"
    assert raw["lastModified"].endswith("Z") and "+" not in raw["lastModified"]

    disabled = next(d for d in catalogue.datasets if d is not None and d.disabled)
    with pytest.raises(DisabledRepoError):
        client.dataset_info(disabled.repo_id)
    assert catalogue_summary(catalogue)["renamed"] > 0


def test_private_repos_are_hidden_from_anonymous_callers_and_strangers(hub: Listening) -> None:
    catalogue = hub.app[HUB].catalogue
    own = next(d for d in catalogue.datasets if d and d.private and d.author == SANDBOX_USER)
    own_namespaces = (SANDBOX_USER, SANDBOX_ORG)
    theirs = next(
        d for d in catalogue.datasets if d and d.private and d.author not in own_namespaces
    )
    assert api(hub).dataset_info(own.repo_id).private is True
    anonymous = httpx.get(f"{hub.url}/api/datasets/{own.repo_id}")
    assert anonymous.status_code == 401
    assert anonymous.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(RepositoryNotFoundError):
        api(hub, token=False).dataset_info(own.repo_id)
    stranger = httpx.get(
        f"{hub.url}/api/datasets/{theirs.repo_id}",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    assert stranger.status_code == 404 and stranger.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(RepositoryNotFoundError):
        api(hub).dataset_info("nobody/no-such-dataset")
    with pytest.raises(RevisionNotFoundError):
        api(hub).dataset_info(own.repo_id, revision="no-such-branch")


def test_a_wrong_token_is_refused_everywhere(hub: Listening) -> None:
    wrong = api(hub, token="hf_wrong")
    with pytest.raises(HfHubHTTPError) as raised:
        wrong.whoami()
    assert raised.value.response.status_code == 401
    response = httpx.get(f"{hub.url}/api/datasets", headers={"Authorization": "Bearer hf_wrong"})
    assert response.status_code == 401
    assert response.headers["X-Error-Message"] == INVALID_CREDENTIALS
    assert response.json() == {"error": INVALID_CREDENTIALS}


def test_whoami(hub: Listening) -> None:
    me = api(hub).whoami()
    assert me["name"] == SANDBOX_USER and me["type"] == "user"
    assert [org["name"] for org in me["orgs"]] == [SANDBOX_ORG]
    assert me["auth"]["accessToken"]["role"] == "write"


def test_repository_management(hub: Listening) -> None:
    client = api(hub)
    url = client.create_repo("ferry-made", repo_type="dataset", private=True)
    assert url == f"{hub.url}/datasets/{SANDBOX_USER}/ferry-made"
    repo_id = f"{SANDBOX_USER}/ferry-made"
    info = client.dataset_info(repo_id)
    assert info.private is True
    object_id = info._id  # type: ignore[attr-defined]

    with pytest.raises(HfHubHTTPError) as raised:
        client.create_repo(repo_id, repo_type="dataset")
    assert raised.value.response.status_code == 409
    assert client.create_repo(repo_id, repo_type="dataset", exist_ok=True) is not None

    client.update_repo_settings(repo_id, repo_type="dataset", private=False, gated="manual")
    info = client.dataset_info(repo_id, token=False)
    assert info.private is False and info.gated == "manual"
    client.update_repo_settings(repo_id, repo_type="dataset", visibility="private")
    assert client.dataset_info(repo_id).private is True

    moved = f"{SANDBOX_ORG}/ferry-moved"
    client.move_repo(repo_id, moved, repo_type="dataset")
    assert client.dataset_info(moved)._id == object_id  # type: ignore[attr-defined]
    with pytest.raises(RepositoryNotFoundError):
        client.dataset_info(repo_id)

    client.delete_repo(moved, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        client.delete_repo(moved, repo_type="dataset")
    client.delete_repo(moved, repo_type="dataset", missing_ok=True)
    with pytest.raises(HfHubHTTPError) as forbidden:
        client.create_repo("google/not-ours", repo_type="dataset")
    assert forbidden.value.response.status_code == 403


def test_renames_keep_the_object_id(hub: Listening) -> None:
    renamed = httpx.post(f"{hub.url}/_sandbox/renames", json={"count": 2}).json()
    assert len(renamed) == 2
    for entry in renamed:
        info = api(hub).dataset_info(entry["id"])
        assert info._id == entry["_id"]  # type: ignore[attr-defined]
        assert httpx.get(f"{hub.url}/api/datasets/{entry['former_ids'][-1]}").status_code == 404


def test_dataset_viewer_parquet(hub: Listening) -> None:
    catalogue = hub.app[HUB].catalogue
    public = [d for d in catalogue.datasets if d and not d.private and not d.gated]
    with_files = next(d for d in public if d.has_parquet and not d.disabled)
    body = httpx.get(f"{hub.url}/parquet", params={"dataset": with_files.repo_id}).json()
    assert set(body) == {"parquet_files", "pending", "failed", "partial"}
    first = body["parquet_files"][0]
    assert set(first) == {"dataset", "config", "split", "url", "filename", "size"}
    assert first["dataset"] == with_files.repo_id and first["url"].startswith(hub.url)
    without = next(d for d in public if not d.has_parquet and not d.disabled)
    response = httpx.get(f"{hub.url}/parquet", params={"dataset": without.repo_id})
    assert response.status_code != 200 and "error" in response.json()
    missing = httpx.get(f"{hub.url}/parquet", params={"dataset": "nobody/nothing"})
    assert missing.status_code == 404 and "error" in missing.json()


def test_rate_limit_headers_on_every_response_and_429_when_spent() -> None:
    with serve(HubOptions(datasets=20, quota=3, anonymous_quota=2, window_seconds=60)) as (
        listening,
    ):
        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        seen = []
        for _ in range(3):
            response = httpx.get(f"{listening.url}/api/datasets/nobody/nothing", headers=headers)
            assert response.status_code == 404
            assert len(response.headers.get_list("RateLimit")) == 1
            assert response.headers["RateLimit-Policy"] == '"fixed window";"api";q=3;w=60'
            seen.append(response.headers["RateLimit"])
        assert seen[0].startswith('"api";r=2;t=') and seen[2].startswith('"api";r=0;t=')
        spent = httpx.get(f"{listening.url}/api/whoami-v2", headers=headers)
        assert spent.status_code == 429
        assert spent.headers["RateLimit"].startswith('"api";r=0;t=')
        assert 0 < int(spent.headers["RateLimit"].rsplit("=", 1)[1]) <= 60
        with pytest.raises(HfHubHTTPError) as raised:  # whoami is never retried
            HfApi(endpoint=listening.url, token=DEFAULT_TOKEN).whoami()
        assert raised.value.response.status_code == 429
        # Anonymous callers have their own, smaller budget.
        anonymous = [httpx.get(f"{listening.url}/api/datasets").status_code for _ in range(3)]
        assert anonymous == [200, 200, 429]


def test_client_waits_out_the_window_and_finishes_the_listing() -> None:
    options = HubOptions(datasets=6, quota=2, anonymous_quota=2, window_seconds=1, page_size=2)
    with serve(options) as (listening,):
        started = time.monotonic()
        items = list(HfApi(endpoint=listening.url, token=DEFAULT_TOKEN).list_datasets())
        assert len(items) == catalogue_summary(listening.app[HUB].catalogue)["visible_with_token"]
        assert time.monotonic() - started < 20


def test_catalogue_is_deterministic_and_cheap_for_100k_datasets() -> None:
    assert [d.repo_id for d in Catalogue(50, seed=3).datasets if d] == [
        d.repo_id for d in Catalogue(50, seed=3).datasets if d
    ]
    assert Catalogue(50, seed=3).datasets[0] != Catalogue(50, seed=4).datasets[0]
    started = time.process_time()
    big = Catalogue(100_000, seed=1)
    assert time.process_time() - started < 5
    from services.sandbox.hf_hub import FULL_FIELDS, render

    query = ListingQuery(sort="lastModified")
    big.page(query, frozenset(), None, 100)  # builds the sorted view once
    after = None
    started = time.process_time()
    for _ in range(20):
        page, after = big.page(query, frozenset(), after, 100)
        [render(d, FULL_FIELDS, 1) for d in page]
    per_page = (time.process_time() - started) / 20
    assert per_page < 0.02, f"{per_page * 1000:.1f} ms of CPU per page of 100"
