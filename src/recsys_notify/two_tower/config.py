"""Experiment configs (one YAML per experiment) and the safe positive-label rule.

A label rule is a tiny boolean expression over ``completion``, ``liked``, ``shared`` and
``watch_time_s`` (e.g. ``completion > 0.99 or liked or shared``). It is parsed with :mod:`ast`
and only a whitelist of node types is accepted, so a config file can never run code.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys_notify.core.config import read_yaml, resolve_path

LABEL_FIELDS = ("completion", "liked", "shared", "watch_time_s")
USER_FEATURES = ("history_mean", "last5_concat", "cluster_distribution", "user_stats")
ITEM_FEATURES = ("item_stats", "creator_stats")
RATIOS = {"7:3": (7, 3), "5:5": (5, 5), "4:6": (4, 6)}


class LabelRuleError(ValueError):
    """A label rule uses something other than fields, numbers, comparisons and and/or/not."""


_COMPARE = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FORBIDDEN = {ast.Call: "function calls", ast.Attribute: "attribute access", ast.Subscript: "subscripts",
              ast.Lambda: "lambdas", ast.BinOp: "arithmetic", ast.NamedExpr: "assignments"}


MAX_RULE_CHARS = 2000
MAX_RULE_DEPTH = 32


def _depths(text: str) -> list[int]:
    """Bracket depth after each character (what makes a rule nest)."""
    out, depth = [], 0
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        out.append(depth)
    return out


def _node_depth(node: ast.AST, level: int = 0) -> int:
    if level > MAX_RULE_DEPTH:
        return level
    return max((_node_depth(child, level + 1) for child in ast.iter_child_nodes(node)), default=level)


def parse_label_rule(text: str) -> Callable[[Mapping[str, Any]], np.ndarray]:
    """Compile ``text`` to a function ``columns -> bool array``; raise :class:`LabelRuleError` if unsafe.

    Size and nesting are bounded before parsing: Python's parser and the compiled rule recurse per level.
    """
    if len(text) > MAX_RULE_CHARS:
        raise LabelRuleError(f"label rule is {len(text)} characters long (at most {MAX_RULE_CHARS})")
    depth = max(_depths(text), default=0)
    if depth > MAX_RULE_DEPTH:
        raise LabelRuleError(f"label rule {text[:60]!r}... nests {depth} levels deep (at most {MAX_RULE_DEPTH})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise LabelRuleError(f"label rule {text[:200]!r} is not a valid expression: "
                             f"{getattr(exc, 'msg', type(exc).__name__)}") from None
    if max(_node_depth(tree), 0) > MAX_RULE_DEPTH:
        raise LabelRuleError(f"label rule {text[:60]!r} nests deeper than {MAX_RULE_DEPTH} levels")
    fn = _compile(tree.body, text)

    def rule(columns: Mapping[str, Any]) -> np.ndarray:
        missing = [f for f in _names(tree) if f not in columns]
        if missing:
            raise LabelRuleError(f"label rule {text!r} needs column(s) {', '.join(missing)}")
        return np.asarray(fn(columns), dtype=bool)

    return rule


def _names(tree: ast.AST) -> list[str]:
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})


def _compile(node: ast.AST, text: str) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def boolop(cols):
            out = np.asarray(parts[0](cols), dtype=bool)
            for part in parts[1:]:
                out = combine(out, np.asarray(part(cols), dtype=bool))
            return out
        return boolop
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, text)
        return lambda cols: np.logical_not(np.asarray(inner(cols), dtype=bool))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_number(node.operand):
        value = -node.operand.value
        return lambda cols: value
    if isinstance(node, ast.Compare):
        if not all(type(op) in _COMPARE for op in node.ops):
            raise LabelRuleError(f"label rule {text!r}: only <, <=, >, >=, ==, != comparisons are allowed")
        operands = [_compile(node.left, text)] + [_compile(c, text) for c in node.comparators]
        ops = [_COMPARE[type(op)] for op in node.ops]

        def compare(cols):
            values = [np.asarray(o(cols), dtype=float) for o in operands]
            out = ops[0](values[0], values[1])
            for i, op in enumerate(ops[1:], start=1):
                out = np.logical_and(out, op(values[i], values[i + 1]))
            return out
        return compare
    if isinstance(node, ast.Name):
        if node.id not in LABEL_FIELDS:
            raise LabelRuleError(f"label rule {text!r}: unknown name {node.id!r}; allowed: {', '.join(LABEL_FIELDS)}")
        name = node.id
        return lambda cols: np.asarray(cols[name])
    if _is_number(node):
        value = node.value
        return lambda cols: value
    what = _FORBIDDEN.get(type(node), f"{type(node).__name__} expressions")
    raise LabelRuleError(f"label rule {text!r}: {what} are not allowed "
                         f"(use {', '.join(LABEL_FIELDS)}, numbers, comparisons, and/or/not)")


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


class ExperimentConfig(BaseModel):
    """Everything that defines one two-tower experiment; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    # data
    embedding_source: Literal["content", "gem"] = "content"
    embedding_dim: Literal[64, 128] = 64
    window_days: Literal[7, 14] = 7
    label_rule: str = "completion > 0.9"
    sample_weight: Literal["none", "interaction_type", "watch_time"] = "none"
    pos_neg_ratio: Literal["7:3", "5:5", "4:6"] = "5:5"
    min_user_interactions: int = Field(4, ge=1)
    max_user_interactions: int = Field(2000, ge=1, description="per 7 days; doubled for a 14-day window")
    min_item_interactions: int = Field(3, ge=1)
    history_len: int = Field(100, ge=1)
    n_clusters: int = Field(18, ge=2)
    # features
    user_features: list[Literal["history_mean", "last5_concat", "cluster_distribution", "user_stats"]] = \
        Field(default_factory=lambda: ["history_mean"])
    item_features: list[Literal["item_stats", "creator_stats"]] = Field(default_factory=list)
    id_embeddings: list[Literal["item_id", "creator_id"]] = Field(default_factory=list)
    id_embedding_dim: int = Field(16, ge=1)
    # model
    hidden: list[int] = Field(default_factory=lambda: [128])
    out_dim: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    output: Literal["dot", "l2", "batchnorm"] = "dot"
    temperature: float = Field(0.1, gt=0)
    # training
    loss: Literal["bce", "sampled_softmax"] = "bce"
    logq_correction: bool = True
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(2, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)

    @field_validator("label_rule")
    @classmethod
    def _safe_rule(cls, v: str) -> str:
        parse_label_rule(v)
        return v

    @property
    def max_interactions_in_window(self) -> int:
        return self.max_user_interactions * self.window_days // 7

    def params(self) -> dict[str, Any]:
        """Flat MLflow params."""
        return {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in self.model_dump().items()}


def identical_groups(configs: Sequence[ExperimentConfig]) -> list[list[str]]:
    """Names of configs that would train the same model (equal apart from name and description).

    E.g. on a dataset without gem embeddings every gem config is run on content and equals its content
    twin: report such groups instead of presenting them as separate models.
    """
    groups: dict[str, list[str]] = {}
    for cfg in configs:
        key = repr(sorted(cfg.model_dump(exclude={"name", "description"}).items()))
        groups.setdefault(key, []).append(cfg.name)
    return [names for names in groups.values() if len(names) > 1]


def available_experiments(directory: str | Path) -> list[str]:
    return sorted(f.stem for f in resolve_path(directory).glob("*.yaml"))


def load_experiment(name: str, directory: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read ``{directory}/{name}.yaml``; ``overrides`` (e.g. fewer epochs) win over the file."""
    path = resolve_path(directory) / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(available_experiments(directory)) or "none"
        raise ValueError(f"unknown two-tower experiment {name!r} (known: {known})")
    data = read_yaml(path, ValueError, "experiment config") or {}
    if not isinstance(data, dict):
        raise ValueError(f"experiment config {path} must contain a mapping, got {type(data).__name__}")
    data = {**data, **(overrides or {}), "name": name}
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid experiment config {path}: {problems}") from None
