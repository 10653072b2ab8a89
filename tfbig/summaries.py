"""What each stage of `tfbig pipeline` records in `pipeline.json`, as typed summaries.

The pipeline writes a stage's summary after the stage and reads it back on a
re-run to decide what to skip; the report reads the same summaries to find
the compressed run, the exported version and the tokenizer. Both sides use
these classes, so a field has one name and one type, and a record written by
an older or newer tfbig (a field renamed, added or dropped) is a `RecordError`
naming the stage and the fields, not a KeyError somewhere in the report. The
pipeline then treats that stage as not recorded (its outputs are checked
afresh); the report shows the error as a note.

A leaf module: no TensorFlow and nothing of tfbig but its errors, so the report
(which must answer without TensorFlow) and the pipeline (which sits above it)
can share it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import ClassVar, Optional

from tfbig.errors import RunError


class RecordError(RunError, ValueError):
    """A stored summary does not have the fields (or types) this tfbig records."""


class Summary:
    """Base of the summaries: the JSON round trip, checked field by field."""

    stage: ClassVar[str]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value) -> "Summary":
        """The summary stored as `value`; RecordError when its fields or types differ."""
        if not isinstance(value, dict):
            raise RecordError(f"the {cls.stage} stage's summary is not a JSON object")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        required = {name for name, field in fields.items()
                    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
        unknown, missing = sorted(set(value) - set(fields)), sorted(required - set(value))
        if unknown or missing:
            differences = ([f"unknown fields {', '.join(unknown)}"] if unknown else []) + (
                [f"no {', '.join(missing)}"] if missing else [])
            raise RecordError(f"the {cls.stage} stage's summary has {' and '.join(differences)} "
                              f"(written by another tfbig version?)")
        hints = typing.get_type_hints(cls)
        for name, item in value.items():
            if not _matches(hints[name], item):
                raise RecordError(f"the {cls.stage} stage's summary has {name}={item!r}, "
                                  f"expected {_type_name(hints[name])}")
        return cls(**value)

    def shown(self) -> dict:
        """The few fields worth a line in the pipeline's output and the report's stage table."""
        return {}


def _matches(hint, value) -> bool:
    """Whether the JSON value `value` fits the annotation `hint` (one level into lists and dicts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(args[0], item) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(args[1], item) for item in value.values())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _metrics(metrics: dict, *keys: str) -> dict:
    return {key: metrics[key] for key in keys if key in metrics}


@dataclasses.dataclass(frozen=True)
class PrepareSummary(Summary):
    """The dataset prepared for training (`data.prepare`); `dataset` None when there is none."""

    stage: ClassVar[str] = "prepare"
    dataset: Optional[str] = None
    # kind, vocab_size, eos_id, file, sha256, special_tokens: spec.json's `tokenizer`.
    tokenizer: dict = dataclasses.field(default_factory=dict)
    train_tokens: int = 0
    eval_tokens: int = 0
    eval_bytes: int = 0

    def shown(self) -> dict:
        if self.dataset is None:
            return {}
        return {"tokenizer": self.tokenizer.get("kind"), "vocab_size": self.tokenizer.get("vocab_size"),
                "train_tokens": self.train_tokens}


@dataclasses.dataclass(frozen=True)
class TrainSummary(Summary):
    stage: ClassVar[str] = "train"
    checkpoint: Optional[str]
    step: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the last evaluation's

    def shown(self) -> dict:
        return {"step": self.step, **_metrics(self.metrics, "eval_accuracy", "eval_perplexity")}


@dataclasses.dataclass(frozen=True)
class EvaluateSummary(Summary):
    stage: ClassVar[str] = "evaluate"
    checkpoint: Optional[str]
    step: int
    replicas: int
    metrics: dict[str, float]

    def shown(self) -> dict:
        return {"step": self.step, **_metrics(self.metrics, "eval_accuracy", "eval_perplexity",
                                              "eval_bits_per_byte")}


@dataclasses.dataclass(frozen=True)
class CompressSummary(Summary):
    """`method` "none" when the config compresses nothing (the other fields are then empty)."""

    stage: ClassVar[str] = "compress"
    method: str
    output_dir: Optional[str] = None
    source_checkpoint: Optional[str] = None
    before: dict = dataclasses.field(default_factory=dict)
    after: dict = dataclasses.field(default_factory=dict)

    def shown(self) -> dict:
        return {"method": self.method}


@dataclasses.dataclass(frozen=True)
class ExportSummary(Summary):
    stage: ClassVar[str] = "export"
    version: int
    path: str
    signatures: list[str]
    artifacts: dict[str, str]
    trained_checkpoint: Optional[str]

    def shown(self) -> dict:
        return {"version": self.version}


@dataclasses.dataclass(frozen=True)
class ValidateSummary(Summary):
    stage: ClassVar[str] = "validate"
    version: int
    engine: str
    checks: list[dict]
    load_seconds: float
    note: str = ""

    def shown(self) -> dict:
        return {"version": self.version}


@dataclasses.dataclass(frozen=True)
class CanarySummary(Summary):
    stage: ClassVar[str] = "canary"
    labels: dict[str, int]

    def shown(self) -> dict:
        return {"labels": self.labels}


@dataclasses.dataclass(frozen=True)
class ServeSummary(Summary):
    stage: ClassVar[str] = "serve"
    version: int
    smoke: str  # the smoke request's answer

    def shown(self) -> dict:
        return {"version": self.version, "smoke": self.smoke}


@dataclasses.dataclass(frozen=True)
class PromoteSummary(Summary):
    stage: ClassVar[str] = "promote"
    labels: dict[str, int]
    removed_versions: list[int] = dataclasses.field(default_factory=list)

    def shown(self) -> dict:
        return {"labels": self.labels}


@dataclasses.dataclass(frozen=True)
class ReportSummary(Summary):
    stage: ClassVar[str] = "report"
    html: str

    def shown(self) -> dict:
        return {"html": self.html}


# Stage name -> its summary class, for readers of pipeline.json (the pipeline's order is its own).
BY_STAGE: dict[str, type[Summary]] = {cls.stage: cls for cls in Summary.__subclasses__()}


def read_summary(stage: str, value) -> Summary:
    """The stored summary of `stage`; RecordError for a stage or fields this tfbig does not know."""
    if stage not in BY_STAGE:
        raise RecordError(f"{stage!r} is not a stage of this tfbig's pipeline")
    return BY_STAGE[stage].from_json(value)
