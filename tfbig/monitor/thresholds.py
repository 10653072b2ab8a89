"""Per-feature thresholds: which distance, past which value, counts as a crossing.

Defaults (see `tfbig.monitor.compare`): L-infinity 0.3 for categorical
features, Jensen-Shannon 0.3 for numeric ones;
the other distances are computed and reported but cross nothing until a
thresholds file gives them a value. A file (YAML or JSON) maps a feature name
or a glob to distances:

    "inputs[*]": {jsd: 0.2}          # every pixel
    predicted_class: {linf: 0.1, nad: 0.2}
    score: {jsd: null}               # null: never crosses

`*` and `?` are the only wildcards (feature names hold brackets, which are
literal). The first entry that matches a feature, in file order, sets the
distances it names; the rest keep their defaults.
"""

from __future__ import annotations

import re

import yaml

from tfbig.errors import UsageError
from tfbig.monitor.compare import JSD, LINF, MEASURES

DEFAULT_THRESHOLD = 0.3
DEFAULTS = {"numeric": {JSD: DEFAULT_THRESHOLD}, "categorical": {LINF: DEFAULT_THRESHOLD}}


class ThresholdsError(UsageError):
    """A thresholds file that cannot be read or says something impossible."""


def _pattern(glob: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + r"\Z")


class Thresholds:
    """`for_feature(name, kind)` is {distance: threshold or None} for that feature."""

    def __init__(self, entries: dict | None = None, *, origin: str = "thresholds"):
        self._entries = [(_pattern(glob), glob, _checked(glob, values, origin))
                         for glob, values in (entries or {}).items()]
        self.origin = origin

    @classmethod
    def from_file(cls, path: str | None) -> "Thresholds":
        if path is None:
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                entries = yaml.safe_load(f)
        except OSError as e:
            raise ThresholdsError(f"cannot read the thresholds file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ThresholdsError(f"{path} is not YAML or JSON: {str(e).splitlines()[0]}") from None
        if entries is not None and not isinstance(entries, dict):
            raise ThresholdsError(f"{path}: expected a mapping of feature (or glob) to thresholds, "
                                  f"e.g. {{'inputs[*]': {{jsd: 0.2}}}}; got a {type(entries).__name__}")
        return cls(entries, origin=path)

    def for_feature(self, name: str, kind: str) -> dict[str, float | None]:
        thresholds = {measure: None for measure in MEASURES}
        thresholds.update(DEFAULTS[kind])
        for pattern, _, values in self._entries:
            if pattern.match(name):
                thresholds.update(values)
                break
        return thresholds

    def unmatched(self, names) -> list[str]:
        """The globs that match none of `names`: most likely a misspelt feature."""
        return [glob for pattern, glob, _ in self._entries if not any(pattern.match(n) for n in names)]


def _checked(glob, values, origin: str) -> dict[str, float | None]:
    if not isinstance(glob, str):
        raise ThresholdsError(f"{origin}: {glob!r} is not a feature name or glob (quote it)")
    if not isinstance(values, dict) or not values:
        raise ThresholdsError(f"{origin}: {glob}: expected distances such as {{jsd: 0.2, linf: 0.1}}, "
                              f"got {values!r}")
    unknown = sorted(set(values) - set(MEASURES))
    if unknown:
        raise ThresholdsError(f"{origin}: {glob}: unknown distance {', '.join(map(str, unknown))}; "
                              f"the distances are {', '.join(MEASURES)}")
    for measure, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise ThresholdsError(f"{origin}: {glob}: {measure} must be a number from 0 to 1 "
                                  f"(or null: never crosses), got {value!r}")
    return {measure: None if value is None else float(value) for measure, value in values.items()}
