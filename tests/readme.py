"""The README's Python examples, so tests can run them as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def python_block(containing: str) -> str:
    """The README's python code block that contains `containing`."""
    with open(README) as readme:
        blocks = re.findall(r"```python\n(.*?)```", readme.read(), re.S)
    matches = [block for block in blocks if containing in block]
    assert len(matches) == 1, f"{len(matches)} README python blocks contain {containing!r}"
    return matches[0]
