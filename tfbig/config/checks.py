"""Validation shared by every config section: allowed values and ranges.

Each section dataclass derives from `Checked`, so its fields are checked when
the section is built, whether by the YAML loader or by Python code
(`TrainConfig(steps=0)` fails as `train.steps: 0` would in a file). A section
with rules across its own fields adds them in `check()`; rules across sections
live in `Config.check()`. The loader only converts YAML types: every rule is
checked here, once.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Literal

from tfbig.config.errors import SectionError


def bounded(default, *, min=None, max=None, min_exclusive=False):
    """A dataclass field whose numeric value must lie in [min, max]."""
    return dataclasses.field(
        default=default,
        metadata={"min": min, "max": max, "min_exclusive": min_exclusive},
    )


class Checked:
    """Mixin for frozen config dataclasses: check the fields once they are set."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_allowed(self, field.name, hints[field.name], value)
            _check_range(self, field.name, value, field.metadata)
        self.check()

    def check(self) -> None:
        """Rules across this section's fields; raise `SectionError`."""


@functools.cache
def _type_hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _check_allowed(section, name: str, hint, value) -> None:
    origin = typing.get_origin(hint)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        for i, entry in enumerate(value):
            _check_allowed(section, f"{name}[{i}]", item, entry)
    elif origin is Literal and value not in typing.get_args(hint):
        allowed = ", ".join(map(repr, typing.get_args(hint)))
        raise SectionError(section, name, f"{_show(value)} is not allowed; choose one of {allowed}")


def _check_range(section, name: str, value, metadata) -> None:
    low, high = metadata.get("min"), metadata.get("max")
    if value is None or (low is None and high is None):
        return
    exclusive = metadata.get("min_exclusive", False)
    too_low = low is not None and (value <= low if exclusive else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return
    lower = f"> {low}" if exclusive else f">= {low}"
    if low is not None and high is not None:
        allowed = f"a value {lower} and <= {high}"
    elif low is not None:
        allowed = f"a value {lower}"
    else:
        allowed = f"a value <= {high}"
    raise SectionError(section, name, f"{_show(value)} is out of range; expected {allowed}")


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"
