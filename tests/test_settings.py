"""Settings: every `FERRY_*` value converted against its field's declared type, one line
per bad value, a faithful round trip through the environment, and `_FILE` secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from services.task_tracker.settings import TrackerSettings
from shared.settings import BaseSettings, SettingsError


@dataclass(frozen=True, kw_only=True)
class Sample(BaseSettings):
    """A service's settings with one field of every kind the environment can carry."""

    workers: int = 1
    ratio: float = 0.5
    dry_run: bool = False
    label: str = "x"
    deadline: float | None = None
    token: str | None = field(default=None, metadata={"secret": True})
    mode: Literal["all", "id", "since"] = "all"
    weights: tuple[int, ...] = (1, 2)
    window: tuple[str, float] = ("api", 300.0)


def one_line_error(env: dict[str, str], settings: type[BaseSettings] = Sample) -> str:
    with pytest.raises(SettingsError) as error:
        settings.from_env(env)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("workers", "12", 12),
        ("workers", " 12 ", 12),
        ("ratio", "0.25", 0.25),
        ("ratio", "3", 3.0),
        ("label", " kept as written ", " kept as written "),
        ("label", "", ""),
        ("deadline", "2.5", 2.5),
        ("deadline", "", None),
        ("token", "", None),
        ("token", "null", "null"),  # text is text, even this one
        ("mode", "since", "since"),
        ("weights", "3, 4,5", (3, 4, 5)),
        ("weights", "", ()),
        ("window", "pages, 60", ("pages", 60.0)),
        ("park_delays", "1.5,60", (1.5, 60.0)),
        ("connect_timeout", "5", 5.0),
        ("http_max_connections", "8", 8),
    ],
)
def test_each_value_is_converted_to_its_declared_type(name: str, raw: str, value: object) -> None:
    settings = Sample.from_env({f"FERRY_{name.upper()}": raw})
    converted = getattr(settings, name)
    assert converted == value
    assert type(converted) is type(value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("0", False),
    ],
)
def test_booleans_are_read_the_ways_people_write_them(raw: str, value: bool) -> None:
    assert Sample.from_env({"FERRY_DRY_RUN": raw}).dry_run is value


def test_an_optional_number_is_a_float_or_none_never_text() -> None:
    assert Sample.from_env({}).deadline is None
    assert Sample.from_env({"FERRY_DEADLINE": ""}).deadline is None
    deadline = Sample.from_env({"FERRY_DEADLINE": "7"}).deadline
    assert isinstance(deadline, float)
    assert deadline == 7.0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"FERRY_WORKERS": "many"}, "FERRY_WORKERS: expected int, got 'many'"),
        ({"FERRY_WORKERS": "1.5"}, "FERRY_WORKERS: expected int, got '1.5'"),
        ({"FERRY_WORKERS": ""}, "FERRY_WORKERS: expected int, got ''"),
        ({"FERRY_RATIO": "half"}, "FERRY_RATIO: expected float, got 'half'"),
        ({"FERRY_RATIO": "nan"}, "FERRY_RATIO: expected float, got 'nan'"),
        ({"FERRY_DRY_RUN": "maybe"}, "FERRY_DRY_RUN: expected true or false, got 'maybe'"),
        ({"FERRY_DEADLINE": "soon"}, "FERRY_DEADLINE: expected float or empty, got 'soon'"),
        ({"FERRY_MODE": "some"}, "FERRY_MODE: expected one of all, id, since, got 'some'"),
        ({"FERRY_WEIGHTS": "1,x"}, "FERRY_WEIGHTS: expected comma-separated ints, got '1,x'"),
        ({"FERRY_WINDOW": "api"}, "FERRY_WINDOW: expected 2 comma-separated values (str, float)"),
        ({"FERRY_PARK_DELAYS": "30,later"}, "FERRY_PARK_DELAYS: expected comma-separated floats"),
        ({"FERRY_CONNECT_TIMEOUT": "0"}, "FERRY_CONNECT_TIMEOUT: must be positive"),
        ({"FERRY_REQUEST_TIMEOUT": "-1"}, "FERRY_REQUEST_TIMEOUT: must be positive"),
        ({"FERRY_HTTP_TIMEOUT": "0"}, "FERRY_HTTP_TIMEOUT: must be positive"),
        ({"FERRY_HTTP_MAX_CONNECTIONS": "0"}, "FERRY_HTTP_MAX_CONNECTIONS: must be positive"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_what_it_expects(
    env: dict[str, str], says: str
) -> None:
    assert says in one_line_error(env)


def test_a_bad_secret_is_not_repeated_in_the_error() -> None:
    @dataclass(frozen=True, kw_only=True)
    class WithPin(BaseSettings):
        pin: int = field(default=0, metadata={"secret": True})

    message = one_line_error({"FERRY_PIN": "12x4"}, WithPin)
    assert message == "FERRY_PIN: expected int, got ***"


def test_the_runtime_fields_have_their_defaults() -> None:
    settings = BaseSettings.from_env({})
    assert (settings.connect_timeout, settings.request_timeout) == (60.0, 10.0)
    assert (settings.http_timeout, settings.http_max_connections) == (30.0, 100)


def test_settings_survive_a_trip_through_the_environment() -> None:
    settings = Sample(
        namespace="ns",
        park_delays=(0.5, 30.0),
        workers=3,
        ratio=0.1,
        dry_run=True,
        deadline=None,
        token="t0k",
        mode="id",
        weights=(),
        window=("pages", 60.5),
        connect_timeout=2.0,
        http_max_connections=5,
    )
    env = settings.as_environment()
    assert env["FERRY_DEADLINE"] == ""
    assert env["FERRY_DRY_RUN"] == "true"
    assert Sample.from_env(env) == settings
    assert Sample.from_env(Sample().as_environment()) == Sample()


def test_a_services_own_fields_convert_the_same_way() -> None:
    settings = TrackerSettings.from_env(
        {"FERRY_BATCH_SIZE": "32", "FERRY_BATCH_DELAY": "0.01", "FERRY_PREFETCH": "128"}
    )
    assert (settings.batch_size, settings.batch_delay, settings.prefetch) == (32, 0.01, 128)
    assert TrackerSettings.from_env(settings.as_environment()) == settings
    assert "FERRY_BATCH_SIZE: expected int" in one_line_error(
        {"FERRY_BATCH_SIZE": "lots"}, TrackerSettings
    )


def test_a_secret_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("hf_abc\n")
    settings = Sample.from_env({"FERRY_TOKEN_FILE": str(secret), "FERRY_TOKEN": "ignored"})
    assert settings.token == "hf_abc"
    assert settings.redacted()["token"] == "***"
    (tmp_path / "workers").write_text("9\n")
    assert Sample.from_env({"FERRY_WORKERS_FILE": str(tmp_path / "workers")}).workers == 9


def test_a_missing_secret_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    message = one_line_error({"FERRY_TOKEN_FILE": str(missing)})
    assert message.startswith(f"FERRY_TOKEN_FILE: cannot read {missing}")
