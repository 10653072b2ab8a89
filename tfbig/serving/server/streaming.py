"""One prompt's generation as a stream of steps, on the embedded server.

A `GenerationStream` runs the model's `generate_start` once and then
`generate_next` once per `step()`, one token each (tfbig.export.stream), and
holds its model version the whole time, so an unload waits for the stream as
it waits for a request. The caller decides when the next step runs: the REST
handler (rest_stream.py) asks for one only after the last one's event has
been written, and stops asking when the client has gone, which is what ends
the computation of a disconnected client's stream.

The model emits its text as bytes (a byte model's token may be half a
character); an incremental UTF-8 decoder turns them into text here, replacing
what is not UTF-8 exactly as `Client.generate` decodes the whole text, so the
pieces join to that text.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import threading

import grpc
import numpy as np
import tensorflow as tf

from tfbig.protocol import GENERATE_INPUTS, GENERATE_SIGNATURE as GENERATE
from tfbig.serving.errors import ServingError, invalid_argument
from tfbig.serving.server.servable import Servable, op_error


@dataclasses.dataclass(frozen=True)
class StreamStep:
    token: int
    text: str  # "" while the token's bytes wait for the rest of their character
    done: bool


class GenerationStream:
    """`step()` until a step is `done`, then (or earlier, to abandon it) `close()`.

    Steps must not overlap (each waits for the one before); `close()` may come from any
    thread at any time, and only releases the version: a step that is running finishes.
    """

    def __init__(self, functions: tuple, inputs: dict[str, np.ndarray], release=lambda: None,
                 version: int = 0):
        self._start, self._next = functions
        self.inputs = inputs  # the generate signature's, as a Predict of this stream would send
        self.version = version
        self.ids: list[int] = []
        # generate_start's arguments (the one prompt as a scalar string).
        self._arguments = [tf.constant(inputs[name][0] if name == "text" else inputs[name])
                           for name in GENERATE_INPUTS]
        self._release = release
        self._lock = threading.Lock()
        self._closed = False
        self._out = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def step(self) -> StreamStep:
        if self._closed:
            raise ServingError(grpc.StatusCode.CANCELLED, "the stream was closed")
        try:
            out = self._start(*self._arguments) if self._out is None else self._next(self._out["state"])
        except tf.errors.OpError as error:
            raise op_error(error) from None
        self._out = out
        done = bool(out["done"])
        text = self._decoder.decode(out["piece"].numpy(), final=done)
        self.text += text
        self.ids.append(int(out["token"]))
        return StreamStep(self.ids[-1], text, done)

    @property
    def tokens(self) -> int:
        """How many tokens the stream has produced."""
        return len(self.ids)

    def outputs(self) -> dict[str, np.ndarray]:
        """What the generate signature returns for this prompt: its text and token ids."""
        return {"text": np.array([self.text.encode()], dtype=object),
                "tokens": np.array([self.ids], dtype=np.int32)}

    def close(self) -> None:
        with self._lock:
            closed, self._closed = self._closed, True
        if not closed:
            self._release()


def open_stream(manager, spec, decode_inputs) -> GenerationStream:
    """A stream on the version `spec` names (held until the stream is closed).
    `decode_inputs(servable, signature)` builds the `generate` signature's inputs,
    as for a Predict; the stream takes one prompt."""
    held = contextlib.ExitStack()
    try:
        entry = held.enter_context(manager.acquire(spec))
        return _stream(entry.servable, decode_inputs, held.close, entry.version)
    except BaseException:
        held.close()
        raise


def _stream(servable: Servable, decode_inputs, release, version: int = 0) -> GenerationStream:
    functions = servable.stream_functions()  # first: "cannot stream" says more than a missing signature
    inputs = decode_inputs(servable, GENERATE)
    servable.check_inputs(GENERATE, inputs)
    if inputs["text"].shape != (1,):
        raise invalid_argument(f"a stream generates for one prompt; 'text' holds {inputs['text'].size} "
                               f"(send one request per prompt, or all at once to the generate "
                               f"signature's :predict)")
    return GenerationStream(functions, inputs, release, version)


def warm_stream(servable: Servable, inputs: dict[str, np.ndarray]) -> None:
    """Run a stream of a warmup record's first prompt, so the first client's stream does not
    pay for the functions' first call (about half a second for a small GPT)."""
    first = {**inputs, "text": inputs["text"][:1]}
    stream = _stream(servable, lambda servable, signature: first, release=lambda: None)
    while not stream.step().done:
        pass
