"""`POST /v1/models/NAME[/versions/N | /labels/L]:generate_stream`: text as it is generated.

A tfbig extension of TF Serving's REST API (tensorflow_model_server answers
this URL with an error). The body is a `generate` Predict's columnar body with
one prompt; the answer is `text/event-stream` (sse.py): one event
`{"text": piece, "token": id}` per token, then `event: done` with the whole
text and the token count. A request that fails before its first token gets an
ordinary `{"error": ...}` reply with TF Serving's HTTP status; one that fails
later ends with `event: error` (the status line has been sent by then).

Each step runs on the REST thread pool, like any request, and only after the
previous event was written; between steps the pool serves other requests, so
many streams share it without holding a thread each. A client that has gone
is noticed before the next step is asked for, so its generation stops there.
`--rest_api_timeout_in_ms` bounds the wait for the first token (the rest of a
stream's length is the client's choice, bounded by the model's max_len).
"""

from __future__ import annotations

import asyncio
import re
import time

import grpc
from aiohttp import web

from tfbig.protocol import (
    GENERATE_SIGNATURE as GENERATE, REST_ERROR, REST_INPUTS, REST_SIGNATURE_NAME,
)
from tfbig.serving import sse
from tfbig.serving.errors import ServingError, deadline_exceeded, invalid_argument
from tfbig.serving.server.core import server_fault
from tfbig.serving.server.handler_pool import HandlerPool, in_pool
from tfbig.serving.server.metrics import ServerMetrics
from tfbig.serving.server.rest_json import columns_to_inputs, model_spec, parse_json
from tfbig.serving.server.streaming import GenerationStream, open_stream

STREAM_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:generate_stream")
API = "generate_stream"  # the URL's :method, as the other REST requests are labelled in metrics


def stream_body(doc: dict) -> dict:
    """The `inputs` of a stream's body: a `generate` Predict's, whose `text` may also be one
    string rather than a list of one."""
    if doc.get(REST_SIGNATURE_NAME, GENERATE) not in ("", GENERATE):
        raise invalid_argument(f"generate_stream runs the generate signature, not "
                               f"'{doc['signature_name']}'; leave signature_name out")
    if REST_INPUTS not in doc:
        raise invalid_argument("generate_stream takes the columnar body of a generate :predict: "
                               "{\"inputs\": {\"text\": ..., \"max_new_tokens\": ..., \"temperature\": ..., "
                               "\"top_k\": ..., \"seed\": ...}}")
    inputs = doc[REST_INPUTS]
    if isinstance(inputs, dict) and isinstance(inputs.get("text"), (str, dict)):  # dict: {"b64": ...}
        inputs = {**inputs, "text": [inputs["text"]]}
    return inputs


def _open(core, spec, body: bytes):
    """(stream, first step) or the ServingError that ended it; runs on the pool."""
    stream = None
    try:
        inputs = stream_body(parse_json(body))
        stream = open_stream(core.manager, spec, lambda servable, signature: columns_to_inputs(
            inputs, servable.input_specs(signature), signature, core.budget()))
        return stream, stream.step()
    except Exception as error:
        if stream is not None:
            stream.close()
        return error.answer() if isinstance(error, ServingError) else server_fault(API, error)


def _step(stream: GenerationStream):
    """The next step or the ServingError that ended the stream; runs on the pool."""
    try:
        return stream.step()
    except ServingError as error:
        return error.answer()
    except Exception as error:
        return server_fault(API, error)


def _close_opened(result) -> None:
    if not isinstance(result, ServingError):
        result[0].close()


def _disconnected(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


class RestStreams:
    """The `:generate_stream` handler; `reply(status, payload)` answers JSON as the other URLs do."""

    def __init__(self, core, metrics: ServerMetrics, *, pool: HandlerPool, timeout_s: float | None,
                 reply, headers: dict[str, str]):
        self._core = core
        self._metrics = metrics
        self._pool = pool
        self._timeout = timeout_s
        self._reply = reply
        self._headers = {**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

    async def handle(self, request: web.Request, match: re.Match, body: bytes) -> web.StreamResponse:
        """Answer a request whose path matched STREAM_PATH."""
        start = time.perf_counter()
        model_name = ""
        try:
            spec = model_spec(*match.groups())
            model_name = spec.name
            opened = await asyncio.wait_for(in_pool(self._pool, _open, self._core, spec, body,
                                                    on_abandoned=_close_opened), self._timeout)
        except ServingError as error:
            opened = error
        except asyncio.TimeoutError:
            opened = deadline_exceeded()
        if isinstance(opened, ServingError):
            self._metrics.record(model_name, API, "REST", opened.code, time.perf_counter() - start)
            return self._reply(opened.http_status, {REST_ERROR: opened.message})
        stream, step = opened
        code = grpc.StatusCode.CANCELLED  # unless the stream is done or fails
        try:
            response = web.StreamResponse(headers=self._headers)
            await response.prepare(request)
            while True:
                self._metrics.record_stream_token(model_name)
                await response.write(sse.event(sse.STEP, {"text": step.text, "token": step.token}))
                if step.done:
                    await response.write(sse.event(sse.DONE, {"text": stream.text, "tokens": stream.tokens}))
                    code = grpc.StatusCode.OK
                    break
                if _disconnected(request):
                    break
                step = await in_pool(self._pool, _step, stream)
                if isinstance(step, ServingError):
                    code = step.code
                    await response.write(sse.event(sse.ERROR, {REST_ERROR: step.message, "code": code.name}))
                    break
        except ConnectionError:  # the client went while an event was written
            pass
        finally:
            stream.close()
            self._metrics.record(model_name, API, "REST", code, time.perf_counter() - start)
        return response
