"""The AIoD + Keycloak stand-in, driven by the real `aiondemand` client and by plain httpx.

The server runs in a background thread on 127.0.0.1 (the client is synchronous); each test
starts from an empty store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiod
import httpx
import pytest
from aiod.authentication import Token, set_token

from services.sandbox.aiod import (
    AIOD,
    DEFAULT_CLIENTS,
    DELETE_DENIED,
    EDIT_DENIED,
    INACTIVE_TOKEN,
    NO_PLATFORM_FIELDS,
    NO_TOKEN,
    NOT_PUBLISHED,
    PID_NOT_NONE,
    PLATFORM_XNOR,
    AiodOptions,
    Client,
    create_app,
    duplicate,
    not_found,
    not_found_on_platform,
    unknown_platform,
    upload_denied,
)
from services.sandbox.server import Listening, ServerThread

pytestmark = pytest.mark.timeout(60)

CONNECTOR, ROLELESS = DEFAULT_CLIENTS
NOSUCH_CONNECTOR = Client("platform_nosuch", "nosuch-secret", ("platform_nosuch",))
EDITOR = Client("editor", "editor-secret", ("update_datasets", "delete_datasets"))
TOKEN_LIFETIME = 3
USER_UPLOADS = 3


@pytest.fixture(scope="module")
def server() -> Iterator[Listening]:
    options = AiodOptions(
        clients=(CONNECTOR, ROLELESS, NOSUCH_CONNECTOR, EDITOR),
        token_lifetime_seconds=TOKEN_LIFETIME,
        user_uploads_per_hour=USER_UPLOADS,
    )
    with ServerThread([("aiod", create_app(options), 0)]) as (listening,):
        yield listening


@pytest.fixture
def aiod_url(server: Listening) -> str:
    httpx.delete(f"{server.url}/_sandbox/records")
    httpx.delete(f"{server.url}/_sandbox/faults")
    return server.url


@pytest.fixture
def configured(aiod_url: str) -> Iterator[str]:
    """The aiondemand client pointed at the stand-in as the connector."""
    saved = {
        name: getattr(aiod.config, name)
        for name in ("api_server", "auth_server", "client_id", "version", "request_timeout_seconds")
    }
    aiod.config.api_server = f"{aiod_url}/"
    aiod.config.auth_server = f"{aiod_url}/aiod-auth/"
    aiod.config.client_id = CONNECTOR.client_id
    aiod.config.version = "v2"
    aiod.config.request_timeout_seconds = 5
    set_token(Token(client_secret=CONNECTOR.secret))
    yield aiod_url
    for name, value in saved.items():
        setattr(aiod.config, name, value)


def token_of(url: str, client: Client) -> str:
    response = httpx.post(
        f"{url}/aiod-auth/realms/aiod/protocol/openid-connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "client_secret": client.secret,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def as_(url: str, client: Client) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token_of(url, client)}"})


def metadata(pid: str = "65f0aa00bb11cc22dd33ee44", **extra: Any) -> dict[str, Any]:
    """What the HF connector sends (A7), for one dataset."""
    body: dict[str, Any] = {
        "platform": "huggingface",
        "platform_resource_identifier": pid,
        "name": "someone/some-dataset",
        "same_as": "https://huggingface.co/datasets/someone/some-dataset",
        "description": {"plain": "A dataset."},
        "date_published": "2024-01-02T03:04:05+00:00",
        "license": "mit",
        "keyword": ["zeta", "alpha", "language:en"],
        "distribution": [
            {
                "name": "0000.parquet",
                "description": "someone/some-dataset. Config: default. Split: train",
                "content_url": "https://huggingface.co/datasets/x/resolve/0000.parquet",
                "content_size_kb": 12,
            }
        ],
        "is_accessible_for_free": True,
    }
    body.update(extra)
    return body


def records(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/_sandbox/records").json()  # type: ignore[no-any-return]


def test_connector_flow_with_the_real_client(configured: str) -> None:
    user = aiod.get_current_user()
    assert f"platform_{'huggingface'}" in user.roles

    identifier = aiod.datasets.register(metadata=metadata())
    assert isinstance(identifier, str) and identifier.startswith("data_")
    assert len(identifier) == len("data_") + 24

    found = aiod.datasets.get_asset_from_platform(
        platform="huggingface", platform_identifier="65f0aa00bb11cc22dd33ee44", data_format="json"
    )
    assert found["identifier"] == identifier
    assert found["aiod_entry"]["status"] == "published"
    assert found["keyword"] == ["alpha", "language:en", "zeta"]  # reordered, as the real one
    assert found["date_published"] == "2024-01-02T03:04:05"  # no timezone, as the real one

    replaced = aiod.datasets.replace(identifier=identifier, metadata=metadata(name="renamed/ds"))
    assert replaced.status_code == 200 and replaced.json() is None
    again = aiod.datasets.get_asset(identifier, data_format="json")
    assert again["name"] == "renamed/ds"

    assert aiod.datasets.counts() == 1
    assert aiod.datasets.counts(per_platform=True) == {"huggingface": 1}
    listed = aiod.datasets.get_list(platform="huggingface", data_format="json")
    assert [d["identifier"] for d in listed] == [identifier]

    assert aiod.datasets.delete(identifier=identifier).status_code == 200
    with pytest.raises(KeyError):
        aiod.datasets.get_asset_from_platform(
            platform="huggingface", platform_identifier="65f0aa00bb11cc22dd33ee44"
        )
    with pytest.raises(KeyError):
        aiod.datasets.get_asset(identifier)
    # Soft delete: the platform id can be registered again, under a new identifier.
    second = aiod.datasets.register(metadata=metadata())
    assert isinstance(second, str) and second != identifier
    stored = records(configured)
    assert len(stored) == 2 and sum(r["_date_deleted"] is None for r in stored) == 1


def test_register_answers_409_with_the_existing_identifier(configured: str) -> None:
    first = aiod.datasets.register(metadata=metadata())
    response = aiod.datasets.register(metadata=metadata())
    assert not isinstance(response, str) and response.status_code == 409
    assert response.json()["detail"] == duplicate(str(first))
    assert response.json()["reference"]


def test_tokens_expire_and_the_client_renews_them(configured: str, server: Listening) -> None:
    aiod.get_current_user()
    time.sleep(TOKEN_LIFETIME - 2 + 0.2)  # the client renews 2 s before expiry
    aiod.get_current_user()
    issued = server.app[AIOD].tokens
    assert sum(t.client == CONNECTOR for t in issued.values()) >= 2

    stale = token_of(configured, CONNECTOR)
    httpx.post(f"{configured}/_sandbox/tokens/expire")
    response = httpx.get(
        f"{configured}/authorization_test", headers={"Authorization": f"Bearer {stale}"}
    )
    assert response.status_code == 401
    assert response.json()["detail"] == INACTIVE_TOKEN
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_token_endpoint_errors(aiod_url: str) -> None:
    url = f"{aiod_url}/aiod-auth/realms/aiod/protocol/openid-connect/token"
    form = {"grant_type": "client_credentials", "client_id": CONNECTOR.client_id}
    wrong = httpx.post(url, data={**form, "client_secret": "wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized_client"
    grant = httpx.post(url, data={**form, "client_secret": CONNECTOR.secret, "grant_type": "x"})
    assert grant.status_code == 400
    realm = httpx.post(url.replace("/aiod/", "/other/"), data=form)
    assert realm.status_code == 404
    # What python-keycloak sends as well: empty username, password, code, redirect_uri.
    keycloak_form = {**form, "client_secret": CONNECTOR.secret, "scope": "openid",
                     "username": "", "password": "", "code": "", "redirect_uri": ""}  # fmt: skip
    ok = httpx.post(url, data=keycloak_form).json()
    assert ok["token_type"] == "Bearer" and ok["expires_in"] == TOKEN_LIFETIME


def test_authorization_test_and_missing_token(aiod_url: str) -> None:
    with as_(aiod_url, ROLELESS) as client:
        me = client.get("/authorization_test").json()
    assert me["name"] == f"service-account-{ROLELESS.client_id}"
    assert not any(role.startswith("platform") for role in me["roles"])
    anonymous = httpx.post(f"{aiod_url}/v2/datasets", json=metadata())
    assert anonymous.status_code == 401 and anonymous.json()["detail"] == NO_TOKEN
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"


def test_role_rules(aiod_url: str) -> None:
    with as_(aiod_url, ROLELESS) as user:
        response = user.post("/v2/datasets", json=metadata())
        assert (response.status_code, response.json()["detail"]) == (403, NO_PLATFORM_FIELDS)
        plain = {k: v for k, v in metadata().items()
                 if k not in ("platform", "platform_resource_identifier")}  # fmt: skip
        draft = user.post("/v2/datasets", json=plain).json()["identifier"]
    with as_(aiod_url, CONNECTOR) as connector:
        other = connector.post("/v2/datasets", json=metadata(platform="openml"))
        assert (other.status_code, other.json()["detail"]) == (403, upload_denied("openml"))
        # The role is checked before the platform's existence (403 before 412).
        nosuch = connector.post("/v2/datasets", json=metadata(platform="nosuch"))
        assert (nosuch.status_code, nosuch.json()["detail"]) == (403, upload_denied("nosuch"))
        no_pid = connector.post("/v2/datasets", json=metadata(platform_resource_identifier=None))
        assert (no_pid.status_code, no_pid.json()["detail"]) == (403, PID_NOT_NONE)
        ours = connector.post("/v2/datasets", json=metadata()).json()["identifier"]
        # A user's draft is neither readable by others nor editable by them.
        assert connector.get(f"/v2/datasets/{draft}").status_code == 403
        edit = connector.put(f"/v2/datasets/{draft}", json=plain)
        assert (edit.status_code, edit.json()["detail"]) == (403, EDIT_DENIED)
        gone = connector.delete(f"/v2/datasets/{draft}")
        assert (gone.status_code, gone.json()["detail"]) == (403, DELETE_DENIED)
    with as_(aiod_url, NOSUCH_CONNECTOR) as unregistered:
        response = unregistered.post("/v2/datasets", json=metadata(platform="nosuch"))
        assert (response.status_code, response.json()["detail"]) == (
            412,
            unknown_platform("nosuch"),
        )
    anonymous = httpx.get(f"{aiod_url}/v2/datasets/{draft}")
    assert (anonymous.status_code, anonymous.json()["detail"]) == (401, NOT_PUBLISHED)
    with as_(aiod_url, EDITOR) as editor:  # update_datasets / delete_datasets roles
        assert editor.put(f"/v2/datasets/{ours}", json=metadata(name="edited")).status_code == 200
        assert editor.delete(f"/v2/datasets/{ours}").status_code == 200
    statuses = {r["identifier"]: r["aiod_entry"]["status"] for r in records(aiod_url)}
    assert statuses == {draft: "draft", ours: "published"}


def test_not_found_and_validation_errors(aiod_url: str) -> None:
    missing = "data_" + "A" * 24
    response = httpx.get(f"{aiod_url}/v2/datasets/{missing}")
    assert (response.status_code, response.json()["detail"]) == (404, not_found(missing))
    assert response.json()["reference"]
    bad_id = httpx.get(f"{aiod_url}/v2/datasets/42")
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["path", "identifier"]
    platform = httpx.get(f"{aiod_url}/v2/platforms/huggingface/datasets/abc")
    assert platform.json()["detail"] == not_found_on_platform("abc", "huggingface")
    unknown = httpx.get(f"{aiod_url}/v2/platforms/nowhere/datasets/abc")
    assert (unknown.status_code, unknown.json()["detail"]) == (
        400,
        "platform 'nowhere' not recognized.",
    )
    assert httpx.get(f"{aiod_url}/v2/datasets", params={"limit": 1001}).status_code == 422
    with as_(aiod_url, CONNECTOR) as connector:
        status = connector.post("/v2/datasets", json=metadata(aiod_entry={"status": "published"}))
        assert status.status_code == 422
        assert status.json()["detail"][0]["type"] == "extra_forbidden"
        long = connector.post("/v2/datasets", json=metadata(description={"plain": "x" * 65_536}))
        assert long.status_code == 422
        assert long.json()["detail"][0]["loc"] == ["body", "description", "plain"]
        blob = metadata(distribution=[{"content_url": "https://x", "binary_blob": "AAAA"}])
        assert connector.post("/v2/datasets", json=blob).status_code == 400
        identifier = connector.post("/v2/datasets", json=metadata()).json()["identifier"]
        connector.delete(f"/v2/datasets/{identifier}")
        deleted = connector.get(f"/v2/datasets/{identifier}")
        assert deleted.json()["detail"] == not_found(identifier, deleted=True)
    with as_(aiod_url, ROLELESS) as user:
        half = metadata(platform=None)
        del half["platform"]
        response = user.post("/v2/datasets", json=half)
        assert response.json()["detail"] == NO_PLATFORM_FIELDS
    assert PLATFORM_XNOR.startswith("If platform is NULL")


def test_put_is_a_full_replace_and_the_unversioned_paths_answer(aiod_url: str) -> None:
    with as_(aiod_url, CONNECTOR) as connector:
        identifier = connector.post("/datasets", json=metadata()).json()["identifier"]
        body = metadata()
        del body["license"], body["keyword"]
        assert connector.put(f"/v2/datasets/{identifier}", json=body).json() is None
        read = connector.get(f"/datasets/{identifier}").json()
    assert read["license"] is None and read["keyword"] == []
    assert read["aiod_entry"]["date_modified"] >= read["aiod_entry"]["date_created"]
    assert httpx.get(f"{aiod_url}/counts/datasets").json() == 1


def test_a_record_is_found_by_the_platform_id_its_body_says_now(aiod_url: str) -> None:
    with as_(aiod_url, CONNECTOR) as connector:
        identifier = connector.post("/v2/datasets", json=metadata(pid="old-pid")).json()[
            "identifier"
        ]
        connector.put(f"/v2/datasets/{identifier}", json=metadata(pid="new-pid"))
        old = connector.get("/v2/platforms/huggingface/datasets/old-pid")
        new = connector.get("/v2/platforms/huggingface/datasets/new-pid")
        assert old.status_code == 404
        assert new.json()["identifier"] == identifier
        # The old platform id is free again; the new one is taken.
        assert connector.post("/v2/datasets", json=metadata(pid="old-pid")).status_code == 200
        assert connector.post("/v2/datasets", json=metadata(pid="new-pid")).status_code == 409
        connector.delete(f"/v2/datasets/{identifier}")
        assert connector.get("/v2/platforms/huggingface/datasets/new-pid").status_code == 404
        assert connector.post("/v2/datasets", json=metadata(pid="new-pid")).status_code == 200


def test_injected_500_has_the_real_detail_shape(aiod_url: str) -> None:
    httpx.post(f"{aiod_url}/_sandbox/faults", json={"status": 500, "count": 1})
    response = httpx.get(f"{aiod_url}/v2/counts/datasets")
    assert response.status_code == 500
    assert response.json()["detail"].startswith(
        "Unexpected exception while processing your request. Please contact the maintainers: "
    )
    assert httpx.get(f"{aiod_url}/v2/counts/datasets").status_code == 200


def test_user_uploads_are_rate_limited_and_connectors_are_not(aiod_url: str) -> None:
    plain = {"name": "a user's dataset"}
    with as_(aiod_url, ROLELESS) as user:
        statuses = [user.post("/v2/datasets", json=plain).status_code for _ in range(4)]
        assert statuses == [200] * USER_UPLOADS + [429]
        limited = user.post("/v2/datasets", json=plain)
        assert 0 < int(limited.headers["Retry-After"]) <= 3600
    with as_(aiod_url, CONNECTOR) as connector:
        for index in range(USER_UPLOADS + 1):
            pid = f"65f0aa00bb11cc22dd33ee{index:02d}"
            assert connector.post("/v2/datasets", json=metadata(pid)).status_code == 200
