"""Parameter validation against openhexa-sdk: a table of cases taken from the reference's
rules (section 5) and observations (section 9), each checked against its expected outcome
and, where openhexa-sdk is installed, against the SDK itself (same first error, same
validated config, type for type)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.openhexa_launcher.validation import (
    ParameterSpec,
    check_specs,
    validate_config,
    with_task_id,
)

SECRET = "<class 'openhexa.sdk.pipelines.parameter.types.Secret'>"


def p(code: str, type_: str, **options: Any) -> ParameterSpec:
    return ParameterSpec(code=code, type=type_, **options)


@dataclass(frozen=True)
class Case:
    id: str
    specs: list[ParameterSpec]
    config: dict[str, Any]
    ok: dict[str, Any] | None = None  # the validated config, when valid
    errors: list[str] = field(default_factory=list)  # every problem Ferry lists, in order


def invalid_type(value: str, expected: str, got: str) -> str:
    return f"Invalid type for value {value} (expected <class '{expected}'>, got <class '{got}'>)"


N = [p("nb", "int")]
F = [p("xf", "float")]
B = [p("bo", "bool")]
S = [p("st", "str")]
NOT_IN = "The provided value for {} is not included in the provided choices."
ONE_NOT_IN = "One of the provided values for {} is not included in the provided choices."
NOT_A_LIST = "If provided, value should be a list when parameter is multiple."

CASES = [
    # int: isinstance(v, int), so bools pass unchanged; floats and strings do not.
    Case("int-1", N, {"nb": 1}, ok={"nb": 1}),
    Case("int-1.0", N, {"nb": 1.0}, errors=[invalid_type("1.0", "int", "float")]),
    Case("int-true", N, {"nb": True}, ok={"nb": True}),
    Case("int-false", N, {"nb": False}, ok={"nb": False}),
    Case("int-str", N, {"nb": "1"}, errors=[invalid_type("1", "int", "str")]),
    Case("int-empty-str", N, {"nb": ""}, errors=[invalid_type("", "int", "str")]),
    Case("int-null-required", N, {"nb": None}, errors=["nb is required"]),
    Case("int-missing-required", N, {}, errors=["nb is required"]),
    Case("int-missing-optional", [p("nb", "int", required=False)], {}, ok={"nb": None}),
    Case("int-missing-default", [p("nb", "int", default=5)], {}, ok={"nb": 5}),
    Case("int-default-0", [p("nb", "int", default=0)], {"nb": None}, ok={"nb": 0}),
    Case("int-default-true", [p("nb", "int", default=True)], {}, ok={"nb": True}),
    Case("int-true-in-choices", [p("nb", "int", choices=[1, 2])], {"nb": True}, ok={"nb": True}),
    Case(
        "int-not-in-choices",
        [p("nb", "int", choices=[1, 2])],
        {"nb": 3},
        errors=[NOT_IN.format("nb")],
    ),
    Case("int-list", N, {"nb": [1]}, errors=[invalid_type("[1]", "int", "list")]),
    Case("int-huge", N, {"nb": 2**70}, ok={"nb": 2**70}),
    # float: ints and bools become floats; strings stay refused.
    Case("float-int", F, {"xf": 1}, ok={"xf": 1.0}),
    Case("float-true", F, {"xf": True}, ok={"xf": 1.0}),
    Case("float-float", F, {"xf": 1.5}, ok={"xf": 1.5}),
    Case("float-str", F, {"xf": "1.5"}, errors=[invalid_type("1.5", "float", "str")]),
    Case("float-empty-str", F, {"xf": ""}, errors=[invalid_type("", "float", "str")]),
    Case("float-int-in-choices", [p("xf", "float", choices=[1.0, 2.5])], {"xf": 1}, ok={"xf": 1.0}),
    Case(
        "float-not-in-choices",
        [p("xf", "float", choices=[1.5])],
        {"xf": 2},
        errors=[NOT_IN.format("xf")],
    ),
    Case("float-default", [p("xf", "float", default=2.5)], {}, ok={"xf": 2.5}),
    Case("float-dict", F, {"xf": {"aa": 1}}, errors=[invalid_type("{'aa': 1}", "float", "dict")]),
    # bool: a real bool only; missing is False, required or not.
    Case("bool-true", B, {"bo": True}, ok={"bo": True}),
    Case("bool-1", B, {"bo": 1}, errors=[invalid_type("1", "bool", "int")]),
    Case("bool-0", B, {"bo": 0}, errors=[invalid_type("0", "bool", "int")]),
    Case("bool-missing-required", B, {}, ok={"bo": False}),
    Case("bool-null", B, {"bo": None}, ok={"bo": False}),
    Case("bool-empty-str", B, {"bo": ""}, errors=[invalid_type("", "bool", "str")]),
    Case("bool-str-true", B, {"bo": "true"}, errors=[invalid_type("true", "bool", "str")]),
    Case("bool-default-true", [p("bo", "bool", default=True)], {"bo": None}, ok={"bo": True}),
    # str: stripped, "" is missing; defaults are not normalised.
    Case("str-stripped", S, {"st": "  a "}, ok={"st": "a"}),
    Case("str-empty-required", S, {"st": ""}, errors=["st is required"]),
    Case("str-blank-required", S, {"st": "   "}, errors=["st is required"]),
    Case("str-empty-optional", [p("st", "str", required=False)], {"st": ""}, ok={"st": None}),
    Case("str-empty-default", [p("st", "str", default="x")], {"st": ""}, ok={"st": "x"}),
    Case("str-default-spaces", [p("st", "str", default=" d ")], {}, ok={"st": " d "}),
    Case("str-int", S, {"st": 5}, errors=[invalid_type("5", "str", "int")]),
    Case("str-bool", S, {"st": True}, errors=[invalid_type("True", "str", "bool")]),
    Case("str-list", S, {"st": [1, 2]}, errors=[invalid_type("[1, 2]", "str", "list")]),
    Case("str-in-choices", [p("st", "str", choices=["a", "b"])], {"st": " a "}, ok={"st": "a"}),
    Case(
        "str-spaced-choice-never-matches",
        [p("st", "str", choices=[" a"], default=" a")],
        {"st": " a"},
        errors=[NOT_IN.format("st")],
    ),
    # multiple: lists only; None elements dropped for every type, "" only for str.
    Case(
        "multi-str",
        [p("st", "str", multiple=True)],
        {"st": ["a", " b ", ""]},
        ok={"st": ["a", "b"]},
    ),
    Case("multi-str-scalar", [p("st", "str", multiple=True)], {"st": "a"}, errors=[NOT_A_LIST]),
    Case("multi-dict", [p("st", "str", multiple=True)], {"st": {}}, errors=[NOT_A_LIST]),
    Case(
        "multi-empty-required",
        [p("st", "str", multiple=True)],
        {"st": []},
        errors=["st is required"],
    ),
    Case(
        "multi-empty-optional",
        [p("st", "str", multiple=True, required=False)],
        {"st": []},
        ok={"st": []},
    ),
    Case(
        "multi-missing-optional", [p("st", "str", multiple=True, required=False)], {}, ok={"st": []}
    ),
    Case(
        "multi-only-blanks",
        [p("st", "str", multiple=True, required=False)],
        {"st": [None, "  "]},
        ok={"st": []},
    ),
    Case(
        "multi-default",
        [p("st", "str", multiple=True, default=["x"])],
        {"st": []},
        ok={"st": ["x"]},
    ),
    Case(
        "multi-duplicates",
        [p("st", "str", multiple=True)],
        {"st": ["a", "a"]},
        ok={"st": ["a", "a"]},
    ),
    Case(
        "multi-int-null-dropped",
        [p("nb", "int", multiple=True)],
        {"nb": [1, None, 2]},
        ok={"nb": [1, 2]},
    ),
    Case(
        "multi-int-empty-str-kept",
        [p("nb", "int", multiple=True)],
        {"nb": [1, ""]},
        errors=[invalid_type("", "int", "str")],
    ),
    Case(
        "multi-int-every-bad-element",
        [p("nb", "int", multiple=True)],
        {"nb": [1, "a", "b"]},
        errors=[invalid_type("a", "int", "str"), invalid_type("b", "int", "str")],
    ),
    Case(
        "multi-float",
        [p("xf", "float", multiple=True)],
        {"xf": [1, 2.5, True]},
        ok={"xf": [1.0, 2.5, 1.0]},
    ),
    Case(
        "multi-not-in-choices",
        [p("nb", "int", multiple=True, choices=[1, 2])],
        {"nb": [1, 3]},
        errors=[ONE_NOT_IN.format("nb")],
    ),
    Case(
        "multi-in-choices",
        [p("nb", "int", multiple=True, choices=[1, 2])],
        {"nb": [2, 1]},
        ok={"nb": [2, 1]},
    ),
    # unknown keys: after every parameter, in config order.
    Case(
        "unknown-keys",
        N,
        {"nb": 1, "zz": 2, "aa": 3},
        errors=["The provided config contains invalid key(s): zz, aa"],
    ),
    Case(
        "only-unknown",
        [],
        {"task_id": "t1"},
        errors=["The provided config contains invalid key(s): task_id"],
    ),
    Case("no-parameters", [], {}, ok={}),
    Case(
        "parameter-error-before-unknown-keys",
        N,
        {"zz": 1},
        errors=["nb is required", "The provided config contains invalid key(s): zz"],
    ),
    # declaration order decides which problem is the SDK's.
    Case(
        "declaration-order",
        [p("aa", "int"), p("bo", "str")],
        {"bo": 3},
        errors=["aa is required", invalid_type("3", "str", "int")],
    ),
    Case(
        "declaration-order-reversed",
        [p("bo", "str"), p("aa", "int")],
        {"bo": 3},
        errors=[invalid_type("3", "str", "int"), "aa is required"],
    ),
    # secret: like str; its type prints as the SDK's Secret class.
    Case("secret-stripped", [p("tok", "secret")], {"tok": " t "}, ok={"tok": "t"}),
    Case(
        "secret-int",
        [p("tok", "secret")],
        {"tok": 5},
        errors=[f"Invalid type for value 5 (expected {SECRET}, got <class 'int'>)"],
    ),
    Case("secret-empty", [p("tok", "secret")], {"tok": ""}, errors=["tok is required"]),
    # dataset, file and connections: strings, resolved later in the workspace.
    Case("dataset", [p("ds", "dataset")], {"ds": "my-ds"}, ok={"ds": "my-ds"}),
    Case("dataset-int", [p("ds", "dataset")], {"ds": 5}, errors=[invalid_type("5", "str", "int")]),
    Case(
        "dataset-multi", [p("ds", "dataset", multiple=True)], {"ds": ["a", None]}, ok={"ds": ["a"]}
    ),
    Case("file-missing-optional", [p("fi", "file", required=False)], {}, ok={"fi": None}),
    Case("dhis2", [p("conn", "dhis2")], {"conn": "dhis2-play"}, ok={"conn": "dhis2-play"}),
    Case("dhis2-missing", [p("conn", "dhis2")], {}, errors=["conn is required"]),
    Case(
        "postgresql-int",
        [p("db", "postgresql")],
        {"db": 5},
        errors=[invalid_type("5", "str", "int")],
    ),
    Case("iaso", [p("conn", "iaso")], {"conn": "iaso-prod"}, ok={"conn": "iaso-prod"}),
    # disables (bool parameters, SDK 2.22): a disabled parameter takes its default unchecked.
    Case(
        "disabled-by-controller",
        [p("skip", "bool", disables=["xf"]), p("xf", "int")],
        {"skip": True},
        ok={"skip": True, "xf": None},
    ),
    Case(
        "controller-off",
        [p("skip", "bool", disables=["xf"]), p("xf", "int")],
        {"skip": False},
        errors=["xf is required"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validation_table(case: Case) -> None:
    result = validate_config(case.specs, case.config)
    if case.ok is not None:
        assert result.ok, result.messages
        assert _typed(result.config) == _typed(case.ok)
    else:
        assert result.messages == case.errors
        assert result.config == {}


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60


def test_config_is_not_modified() -> None:
    config = {"nb": 1, "zz": 2}
    validate_config(N, config)
    assert config == {"nb": 1, "zz": 2}


# -- the same table against openhexa-sdk itself --------------------------------------------


def sdk_parameter(spec: ParameterSpec) -> Any:
    from openhexa.sdk import Dataset
    from openhexa.sdk.files import File
    from openhexa.sdk.pipelines.parameter import Parameter
    from openhexa.sdk.pipelines.parameter.types import Secret
    from openhexa.sdk.workspaces.connection import (
        CustomConnection,
        DHIS2Connection,
        GCSConnection,
        IASOConnection,
        PostgreSQLConnection,
        S3Connection,
    )

    python_type = {
        "str": str,
        "bool": bool,
        "int": int,
        "float": float,
        "secret": Secret,
        "dhis2": DHIS2Connection,
        "postgresql": PostgreSQLConnection,
        "iaso": IASOConnection,
        "s3": S3Connection,
        "gcs": GCSConnection,
        "custom": CustomConnection,
        "dataset": Dataset,
        "file": File,
    }.get(spec.type, {"dict": dict, "list": list}.get(spec.type))
    return Parameter(
        spec.code,
        type=python_type,  # type: ignore[arg-type]
        name=spec.name,
        choices=spec.choices,
        default=spec.default,
        required=spec.required,
        multiple=spec.multiple,
        disables=spec.disables,
        disable_when=spec.disable_when,
    )


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Any:
    """openhexa-sdk, its workspace resolving every slug to itself (no workspace here)."""
    pytest.importorskip("openhexa.sdk")
    from openhexa.sdk.pipelines.parameter import types

    class Workspace:
        def __getattr__(self, name: str) -> Any:
            return lambda slug: slug

    monkeypatch.setattr(types, "workspace", Workspace())
    from openhexa.sdk.pipelines.pipeline import Pipeline

    return Pipeline


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_sdk_agrees(case: Case, sdk: Any) -> None:
    pipeline = sdk("p", lambda **_: None, [sdk_parameter(s) for s in case.specs])
    try:
        expected = pipeline._validate_config(dict(case.config))
    except Exception as exc:
        expected_error = str(exc)
    else:
        expected_error = None
    result = validate_config(case.specs, case.config)
    if expected_error is None:
        assert result.ok, result.messages
        assert _typed(result.config) == _typed(expected)
    else:
        assert result.messages[:1] == [expected_error]


# -- the parameters themselves (what `@parameter` refuses) ------------------------------------

INVALID_CODE = (
    "Invalid parameter code provided ({}). Parameter must start with a letter or an"
    " underscore, and can only contain lower case letters, numbers and underscores."
)
INVALID_DICT_TYPE = (
    "Invalid parameter type provided (<class 'dict'>). Valid parameter types are str, bool,"
    " int, float, Secret, DHIS2Connection, PostgreSQLConnection, IASOConnection, S3Connection,"
    " GCSConnection, CustomConnection, Dataset, File"
)

DEFINITIONS = [
    (
        "code-short",
        p("a", "int"),
        INVALID_CODE.format("a"),
    ),
    (
        "code-upper",
        p("Ab", "int"),
        INVALID_CODE.format("Ab"),
    ),
    (
        "type-dict",
        p("ab", "dict"),
        INVALID_DICT_TYPE,
    ),
    (
        "bool-choices",
        p("ab", "bool", choices=[True]),
        "Parameters of type <class 'bool'> don't accept choices.",
    ),
    ("empty-choices", p("ab", "int", choices=[]), "Choices, if provided, cannot be empty."),
    (
        "bad-choices",
        p("ab", "int", choices=["a"]),
        "The provided choices are not valid for the <class 'int'> parameter type.",
    ),
    (
        "float-int-choices",
        p("ab", "float", choices=[1]),
        "The provided choices are not valid for the <class 'float'> parameter type.",
    ),
    (
        "bool-multiple",
        p("ab", "bool", multiple=True),
        "Parameters of type <class 'bool'> can't have multiple values.",
    ),
    (
        "file-multiple",
        p("ab", "file", multiple=True),
        "Parameters of type <class 'openhexa.sdk.files.file.File'> can't have multiple values.",
    ),
    (
        "multiple-scalar-default",
        p("ab", "str", multiple=True, default="a"),
        "Default values should be lists when using multiple=True",
    ),
    ("str-empty-default", p("ab", "str", default=""), "The default value for ab is not valid."),
    ("float-int-default", p("ab", "float", default=1), "The default value for ab is not valid."),
    ("secret-default", p("ab", "secret", default="x"), "The default value for ab is not valid."),
    (
        "default-not-in-choices",
        p("ab", "int", choices=[1, 2], default=3),
        "The default value for ab is not included in the provided choices.",
    ),
    (
        "defaults-not-in-choices",
        p("ab", "str", multiple=True, choices=["a"], default=["c"]),
        "The default list of values for ab is not included in the provided choices.",
    ),
    (
        "dataset-int-default",
        p("ab", "dataset", default=3),
        "Default value for dataset parameter type should be string.",
    ),
    (
        "disables-on-int",
        p("ab", "int", disables=["cd"]),
        "Only boolean parameters can use 'disables'. Parameter 'ab' is of type <class 'int'>.",
    ),
    ("int-true-default", p("ab", "int", default=True, choices=[1, 2]), None),
    ("fine", p("ab", "str", choices=["x"], default="x", multiple=False), None),
]


@pytest.mark.parametrize(("name", "spec", "message"), DEFINITIONS, ids=[d[0] for d in DEFINITIONS])
def test_definition_table(name: str, spec: ParameterSpec, message: str | None) -> None:
    assert check_specs([spec]) == ([] if message is None else [message])


@pytest.mark.parametrize(("name", "spec", "message"), DEFINITIONS, ids=[d[0] for d in DEFINITIONS])
def test_the_sdk_agrees_on_definitions(
    name: str, spec: ParameterSpec, message: str | None, sdk: Any
) -> None:
    try:
        sdk_parameter(spec)
    except Exception as exc:
        assert message == str(exc)
    else:
        assert message is None


def test_disables_references_are_checked() -> None:
    specs = [p("ab", "bool", disables=["ab", "zz", "cd"]), p("cd", "bool", disables=["ab"])]
    assert check_specs(specs) == [
        "Parameter 'ab' cannot disable itself.",
        "Parameter 'ab' disables a non-existing parameter 'zz'.",
        "Parameter 'ab' disables 'cd', which is itself a disabling parameter."
        " Chaining disabling parameters is not supported.",
        "Parameter 'cd' disables 'ab', which is itself a disabling parameter."
        " Chaining disabling parameters is not supported.",
    ]


def _typed(value: Any) -> Any:
    """`value` with every scalar paired with its type, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return ("nan", float)
    # A Secret is the SDK's str subclass: on the wire it is a string.
    return (value, str if isinstance(value, str) else type(value))


def test_the_task_id_goes_only_where_a_pipeline_declares_it() -> None:
    config = {"year": 2025}
    assert with_task_id([p("year", "int")], config, "t-1", "task_id") == config
    declared = [p("year", "int"), p("task_id", "str", required=True)]
    launched = with_task_id(declared, config, "t-1", "task_id")
    assert launched == {"year": 2025, "task_id": "t-1"}
    assert validate_config(declared, launched).ok  # a required task_id is no problem
    assert not validate_config(declared, config).ok  # ... as long as it is filled in
    assert with_task_id([p("task_id", "int")], {}, "42", "task_id") == {"task_id": 42}
