"""The step contract: ``run(storage, settings, dt, params) -> StepResult``, the same for every step.

``params`` are one run's overrides: keys of the step's config section (absent or ``None`` = the
configured value) plus the step's run-only fields (e.g. an ops override request). They are
validated by one mechanism, :func:`parse_params`, against the same pydantic models the config file
uses, so DAG Params, CLI flags and config can never disagree on names or bounds.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError

from recsys_notify.core.config import ConfigError, Settings, problems


@dataclass(frozen=True)
class StepSpec:
    """Where a step lives. Its settings section, DAG id and package share its name.

    ``run_params`` names a light (pydantic-only) model of run-only params, ``"module:Class"``;
    ``context_fields`` are run params the orchestrator fills (the Airflow run id, who triggered it).
    Steps with ``parts`` (shards, experiments) also expose ``parts``, ``run_part`` and ``finish``.
    """

    name: str
    run_params: str | None = None
    context_fields: tuple[str, ...] = ()
    parts: bool = False

    @property
    def section(self) -> str:
        return self.name

    @property
    def module(self) -> str:
        return f"recsys_notify.{self.name}.step"

    def run_model(self) -> type[BaseModel] | None:
        if self.run_params is None:
            return None
        module, cls = self.run_params.split(":")
        return getattr(importlib.import_module(module), cls)


STEPS: dict[str, StepSpec] = {s.name: s for s in (
    StepSpec("pair_mining"),
    StepSpec("gem"),
    StepSpec("user_medoids", parts=True),
    StepSpec("global_medoids", "recsys_notify.global_medoids.params:OverrideParams", ("run_id", "requested_by")),
    StepSpec("notifications"),
    StepSpec("two_tower", parts=True),
)}


@dataclass
class StepResult:
    """What one run did, small and JSON-serialisable (the DAG task's XCom and the CLI's output)."""

    step: str
    dt: date
    outputs: dict[str, int] = field(default_factory=dict)  # dataset -> rows written
    summary: dict[str, Any] = field(default_factory=dict)  # counts and headline metrics
    inputs: dict[str, list[str]] = field(default_factory=dict)  # role -> partition dates read
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"step": self.step, "dt": self.dt.isoformat(), "outputs": self.outputs,
                          "summary": self.summary, "inputs": self.inputs, "mlflow_run_id": self.mlflow_run_id,
                          "mlflow_experiment_id": self.mlflow_experiment_id})


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy values to Python, dates to ISO, non-finite floats to None)."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy here (DAG parse time)
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):
        return value.isoformat()
    return value


def section_model(settings: Settings, section: str) -> type[BaseModel]:
    return type(getattr(settings, section))


def parse_params(settings: Settings, section: str, params: Mapping[str, Any] | None,
                 run_model: type[BaseModel] | None = None) -> tuple[Settings, BaseModel | None]:
    """Split ``params`` into overrides of ``settings.<section>`` and the step's run-only fields.

    Both are validated like the config file; an unknown key or a bad value is a :class:`ConfigError`
    naming it. ``None`` values mean "use the configured value" (the Airflow trigger form's empty field).
    """
    params = {k: v for k, v in (params or {}).items() if v is not None}
    config_fields = set(section_model(settings, section).model_fields)
    run_fields = set(run_model.model_fields) if run_model else set()
    unknown = sorted(set(params) - config_fields - run_fields)
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {section}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(config_fields | run_fields))})")
    overrides = {k: v for k, v in params.items() if k in config_fields}
    if overrides:
        data = settings.model_dump()
        data[section] = {**data[section], **overrides}
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {section} parameter(s): {problems(exc)}") from None
    run = None
    if run_model is not None:
        try:
            run = run_model.model_validate({k: v for k, v in params.items() if k in run_fields})
        except ValidationError as exc:
            raise ConfigError(f"invalid {section} parameter(s): {problems(exc)}") from None
    return settings, run
