"""The README's examples, so tests can run them as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def readme_block(containing: str, replacements: dict[str, str] | None = None, *, language: str = "python") -> str:
    """The README's `language` code block that contains `containing`, with `replacements` made
    (addresses and paths that differ between a reader's machine and a test)."""
    with open(README) as readme:
        blocks = re.findall(rf"```{language}\n(.*?)```", readme.read(), re.S)
    matches = [block for block in blocks if containing in block]
    assert len(matches) == 1, f"{len(matches)} README {language} blocks contain {containing!r}"
    code = matches[0]
    for old, new in (replacements or {}).items():
        code = code.replace(old, new)
    return code


def run_block(code: str) -> dict:
    """Run example code as a script of its own; returns its globals."""
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "<README example>", "exec"), namespace)
    return namespace
