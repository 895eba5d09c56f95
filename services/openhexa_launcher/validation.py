"""A pipeline run's config, validated exactly as openhexa-sdk validates it, with no I/O.

`validate_config(specs, config)` does what `Pipeline._validate_config` of openhexa-sdk 2.22
does inside the run's container, before anything is launched: parameters in declaration
order (the order of the version's parameter list), each value normalised (str stripped and
"" taken as missing, ints and bools turned into floats for float parameters), defaults
filled, required, type, choices and `multiple` checked, and keys no parameter declares
rejected after the parameters. Type checks follow Python's `isinstance`, so they are strict
the SDK's way: `true` is an int, `1` is not a bool, `1.0` is not an int.

The SDK stops at its first problem; Ferry lists every problem, and its first one is the
SDK's, in the SDK's own words. Dataset, file and connection values are checked to be
strings, as the SDK does before it resolves them in the workspace (resolving needs the
workspace: that is left to the run).

`check_specs(specs)` is the SDK's definition-time check of the parameters themselves
(what `@parameter` raises), for pipeline authors checking a spec file offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# How the SDK prints each spec type's Python type (`str(ParameterType)`), in its messages.
TYPE_NAMES: dict[str, str] = {
    "str": "<class 'str'>",
    "bool": "<class 'bool'>",
    "int": "<class 'int'>",
    "float": "<class 'float'>",
    "secret": "<class 'openhexa.sdk.pipelines.parameter.types.Secret'>",
    "dhis2": "<class 'openhexa.sdk.workspaces.connection.DHIS2Connection'>",
    "postgresql": "<class 'openhexa.sdk.workspaces.connection.PostgreSQLConnection'>",
    "iaso": "<class 'openhexa.sdk.workspaces.connection.IASOConnection'>",
    "s3": "<class 'openhexa.sdk.workspaces.connection.S3Connection'>",
    "gcs": "<class 'openhexa.sdk.workspaces.connection.GCSConnection'>",
    "custom": "<class 'openhexa.sdk.workspaces.connection.CustomConnection'>",
    "dataset": "<class 'openhexa.sdk.datasets.dataset.Dataset'>",
    "file": "<class 'openhexa.sdk.files.file.File'>",
}
CONNECTION_TYPES = frozenset({"dhis2", "postgresql", "iaso", "s3", "gcs", "custom"})
# Types whose values are strings the SDK resolves in the workspace (it checks `str` first).
RESOLVED_TYPES = CONNECTION_TYPES | {"dataset", "file"}
STRIPPED_TYPES = frozenset({"str", "secret"})  # normalised: stripped, "" is missing
ACCEPTS_CHOICES = frozenset({"str", "int", "float", "dataset"})
ACCEPTS_MULTIPLE = frozenset({"str", "int", "float", "dataset"})
# The SDK names its valid types by their Python names.
SDK_TYPE_NAMES = (
    "str, bool, int, float, Secret, DHIS2Connection, PostgreSQLConnection, IASOConnection,"
    " S3Connection, GCSConnection, CustomConnection, Dataset, File"
)
CODE_PATTERN = re.compile("^[a-z_][a-z_0-9]+$")  # the SDK's, `re.match`-ed


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a pipeline version, as the SDK pushes it (`Parameter.to_dict`)."""

    code: str
    type: str
    name: str | None = None
    choices: list[Any] | None = None
    default: Any = None
    required: bool = True
    multiple: bool = False
    # Bool parameters only (SDK 2.22): the codes this one disables when it equals
    # `disable_when`; a disabled parameter is not checked and takes its default.
    disables: list[str] | None = None
    disable_when: bool = True

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, self.type)


@dataclass(frozen=True)
class Problem:
    """One reason a config is refused: the SDK's message, and the parameter it is about
    (None for the invalid keys)."""

    message: str
    parameter: str | None = None


@dataclass(frozen=True)
class Validated:
    """The outcome: the config the run will see, or every problem (the SDK's first)."""

    config: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def messages(self) -> list[str]:
        return [p.message for p in self.problems]


class _Refused(Exception):
    """One parameter's value is refused; `messages` in the order the SDK meets them."""

    def __init__(self, *messages: str) -> None:
        super().__init__(messages[0])
        self.messages = list(messages)


def with_task_id(
    specs: Sequence[ParameterSpec], config: Mapping[str, Any], task_id: str, parameter: str
) -> dict[str, Any]:
    """`config` with the task id as `parameter`, where (and only where) the pipeline declares
    that parameter: what the launcher sends, and so what a launch is validated as."""
    declared = next((s for s in specs if s.code == parameter), None)
    if declared is None:
        return dict(config)
    value: Any = int(task_id) if declared.type == "int" and task_id.isdigit() else task_id
    return {**config, parameter: value}


def validate_config(specs: Sequence[ParameterSpec], config: Mapping[str, Any]) -> Validated:
    """Validate `config` against the parameters `specs`, in their order (see the module)."""
    remaining = dict(config)
    disabled = _disabled_codes(specs, remaining)
    validated: dict[str, Any] = {}
    problems: list[Problem] = []
    for spec in specs:
        value = remaining.pop(spec.code, None)
        if spec.code in disabled:
            validated[spec.code] = spec.default
            continue
        try:
            validated[spec.code] = _validate_value(spec, value)
        except _Refused as refused:
            problems.extend(Problem(message, spec.code) for message in refused.messages)
    if remaining:
        # The SDK checks these only once every parameter passed; listed last, in config order.
        keys = ", ".join(str(key) for key in remaining)
        problems.append(Problem(f"The provided config contains invalid key(s): {keys}"))
    return Validated({} if problems else validated, problems)


def _disabled_codes(specs: Sequence[ParameterSpec], config: Mapping[str, Any]) -> set[str]:
    disabled: set[str] = set()
    for spec in specs:
        if spec.disables:
            # The raw value, truthiness and all: what `Pipeline._get_disabled_codes` reads.
            effective = config.get(spec.code, spec.default)
            if bool(effective) == spec.disable_when:
                disabled.update(spec.disables)
    return disabled


def _validate_value(spec: ParameterSpec, value: Any) -> Any:
    return _validate_multiple(spec, value) if spec.multiple else _validate_single(spec, value)


def _validate_single(spec: ParameterSpec, value: Any) -> Any:
    normalized = normalize(spec.type, value)
    from_default = normalized is None and spec.default is not None
    if from_default:
        normalized = spec.default  # defaults are not normalised
    if normalized is None:
        if spec.type == "bool":
            return False
        if spec.required:
            raise _Refused(f"{spec.code} is required")
        return None
    checked = _check_type(spec, normalized, from_default=from_default)
    if spec.choices is not None and checked not in spec.choices:
        raise _Refused(
            f"The provided value for {spec.code} is not included in the provided choices."
        )
    return checked


def _validate_multiple(spec: ParameterSpec, value: Any) -> list[Any]:
    if value is not None and not isinstance(value, list):
        raise _Refused("If provided, value should be a list when parameter is multiple.")
    values = [] if value is None else [normalize(spec.type, v) for v in value]
    values = [v for v in values if v is not None]
    if not values and spec.default is not None:
        values = spec.default
    if not values and spec.required:
        raise _Refused(f"{spec.code} is required")
    # The SDK stops at the first element of a wrong type; every one is named here.
    type_errors: list[str] = []
    checked: list[Any] = []
    for single in values:
        try:
            checked.append(_check_type(spec, single))
        except _Refused as refused:
            type_errors.extend(refused.messages)
    if type_errors:
        raise _Refused(*type_errors)
    if spec.choices is not None and any(v not in spec.choices for v in checked):
        raise _Refused(
            f"One of the provided values for {spec.code} is not included in the provided choices."
        )
    return checked


def normalize(spec_type: str, value: Any) -> Any:
    """The SDK's `ParameterType.normalize`: what a raw value becomes before it is checked."""
    if spec_type in STRIPPED_TYPES:
        stripped = value.strip() if isinstance(value, str) else value
        return None if stripped == "" else stripped
    if spec_type == "float" and isinstance(value, int):  # bools are ints, too
        return float(value)
    return value


def _check_type(spec: ParameterSpec, value: Any, *, from_default: bool = False) -> Any:
    expected: type = {"bool": bool, "int": int, "float": float}.get(spec.type, str)
    # Only a normalised value is a `Secret` (a str subclass); a default never is.
    not_a_secret = spec.type == "secret" and from_default
    if not isinstance(value, expected) or not_a_secret:
        shown = TYPE_NAMES["str"] if spec.type in RESOLVED_TYPES else spec.type_name
        raise _Refused(f"Invalid type for value {value} (expected {shown}, got {type(value)})")
    return value


# -- the parameters themselves ---------------------------------------------------------


def check_specs(specs: Sequence[ParameterSpec]) -> list[str]:
    """What the SDK's `@parameter` (and `validate_parameters`) would refuse in these
    parameter definitions, one message per parameter (the SDK's first), then duplicates
    and `disables` references."""
    problems: list[str] = []
    well_defined: list[ParameterSpec] = []
    for spec in specs:
        message = _definition_problem(spec)
        if message is None:
            well_defined.append(spec)
        else:
            problems.append(message)
    # The SDK checks references only between parameters it could construct.
    problems.extend(_cross_parameter_problems(well_defined, {s.code for s in specs}))
    return problems


def _definition_problem(spec: ParameterSpec) -> str | None:
    if CODE_PATTERN.match(spec.code) is None:
        return (
            f"Invalid parameter code provided ({spec.code}). Parameter must start with a letter"
            " or an underscore, and can only contain lower case letters, numbers and underscores."
        )
    if spec.type not in TYPE_NAMES:
        shown = f"<class '{spec.type}'>" if spec.type in ("list", "dict") else spec.type
        return (
            f"Invalid parameter type provided ({shown}). Valid parameter types are {SDK_TYPE_NAMES}"
        )
    if spec.choices is not None:
        if spec.type not in ACCEPTS_CHOICES:
            return f"Parameters of type {spec.type_name} don't accept choices."
        if len(spec.choices) == 0:
            return "Choices, if provided, cannot be empty."
        if not all(_is_valid_value(spec, choice) for choice in spec.choices):
            return f"The provided choices are not valid for the {spec.type_name} parameter type."
    if spec.multiple and spec.type not in ACCEPTS_MULTIPLE:
        return f"Parameters of type {spec.type_name} can't have multiple values."
    if spec.disables and spec.type != "bool":
        return (
            f"Only boolean parameters can use 'disables'. Parameter '{spec.code}' is of type"
            f" {spec.type_name}."
        )
    return _default_problem(spec)


def _default_problem(spec: ParameterSpec) -> str | None:
    default = spec.default
    if default is None:
        return None
    if spec.multiple:
        if not isinstance(default, list):
            return "Default values should be lists when using multiple=True"
        defaults = default
    else:
        defaults = [default]
    for value in defaults:
        problem = _default_value_problem(spec, value)
        if problem is not None:
            return problem
    if spec.choices is not None:
        if isinstance(default, list):
            if not all(d in spec.choices for d in default):
                return (
                    f"The default list of values for {spec.code} is not included in the"
                    " provided choices."
                )
        elif default not in spec.choices:
            return f"The default value for {spec.code} is not included in the provided choices."
    return None


def _default_value_problem(spec: ParameterSpec, value: Any) -> str | None:
    """`validate_default` of the spec's type: defaults are checked unnormalised."""
    if spec.type in RESOLVED_TYPES and value is not None and not isinstance(value, str):
        # An InvalidParameterError of its own, with its own words.
        kind = {"dataset": "dataset", "file": "file"}.get(spec.type, "connection")
        return f"Default value for {kind} parameter type should be string."
    if value == "" or not _is_valid_value(spec, value, from_default=True):
        return f"The default value for {spec.code} is not valid."
    return None


def _is_valid_value(spec: ParameterSpec, value: Any, *, from_default: bool = False) -> bool:
    try:
        _check_type(spec, value, from_default=from_default)
    except _Refused:
        return False
    return True


def _cross_parameter_problems(specs: Sequence[ParameterSpec], declared: set[str]) -> Iterable[str]:
    seen: set[str] = set()
    for spec in specs:
        if spec.code in seen:
            # The SDK would silently take the first; a spec file saying it twice is a typo.
            yield f"Parameter {spec.code} is declared more than once."
        seen.add(spec.code)
    controllers = {spec.code for spec in specs if spec.disables}
    for spec in specs:
        for target in spec.disables or []:
            if target == spec.code:
                yield f"Parameter '{spec.code}' cannot disable itself."
            elif target not in declared:
                yield f"Parameter '{spec.code}' disables a non-existing parameter '{target}'."
            elif target in controllers:
                yield (
                    f"Parameter '{spec.code}' disables '{target}', which is itself a disabling"
                    " parameter. Chaining disabling parameters is not supported."
                )
