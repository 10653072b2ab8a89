"""Package names imported on first use, so that importing the package stays cheap.

`tfbig --help` must answer without waiting for TensorFlow, and a server reading
an exported version's manifest must not load the exporter, and a `tfbig data
prepare` worker process must not load TensorFlow: `tfbig.serving`,
`tfbig.export`, `tfbig.distribute` and `tfbig.data` export their names through
`lazy_exports`.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """`__getattr__` and `__all__` for `package`, exporting the names of each of
    `modules` (module -> the names it defines), each imported when first asked for."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)
