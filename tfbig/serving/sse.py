"""Server-sent events, as tfbig's `:generate_stream` writes them and its clients read them.

The format is the browser's EventSource one (an optional `event: NAME` line,
a `data: JSON` line, a blank line), so `curl -N` and JavaScript read a stream
too. Kept beside `codec` because, like it, both ends of the wire must agree.
"""

from __future__ import annotations

from tfbig.serving import codec

STEP = "message"  # EventSource's name for an event without an `event:` line
DONE = "done"
ERROR = "error"


def event(name: str, payload: dict) -> bytes:
    """One event; JSON escapes line breaks, so the payload is one `data:` line."""
    head = b"" if name == STEP else b"event: " + name.encode() + b"\n"
    return head + b"data: " + codec.dumps(payload) + b"\n\n"


class EventParser:
    """Lines in (any split of the stream into lines, terminators included or not), complete
    events out as (name, JSON payload). Pure, so the blocking and the asyncio client share it."""

    def __init__(self):
        self._name = STEP
        self._data: list[bytes] = []

    def feed(self, line: bytes) -> tuple[str, dict] | None:
        line = line.rstrip(b"\r\n")
        if not line:  # the blank line ends an event
            if not self._data:
                return None
            name, data = self._name, b"\n".join(self._data)
            self._name, self._data = STEP, []
            return name, codec.loads(data)
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            self._name = value.decode()
        elif field == b"data":
            self._data.append(value)
        return None  # comments (`: ...`) and fields this format does not use
