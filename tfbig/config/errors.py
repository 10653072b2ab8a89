"""The config's errors: what the loader, the dataclasses and the run report."""

from __future__ import annotations

from tfbig.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class SectionError(ConfigError):
    """A rule of one config section failed, found when the section was built.

    A section does not know where it sits in the config, so it names the field
    relative to itself; the loader, which does know, re-raises the error under
    the dotted key (`train.steps`), and a config built in Python reads it under
    the section's class (`TrainConfig.steps`).
    """

    def __init__(self, section: object, field: str, problem: str):
        super().__init__(f"{type(section).__name__}.{field}: {problem}")
        self.field = field
        self.problem = problem
