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

The request log records a stream as the `generate` Predict it equals: the
request's inputs, and (when it ran to the end) the text and token ids the
signature would have returned.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time

import grpc
from aiohttp import web

from tfbig.protocol import (
    GENERATE_SIGNATURE as GENERATE, REST_ERROR, REST_INPUTS, REST_SIGNATURE_NAME,
)
from tfbig.serving import sse
from tfbig.serving.errors import ServingError, deadline_exceeded, invalid_argument
from tfbig.serving.server.core import predict_response, server_fault
from tfbig.serving.server.handler_pool import HandlerPool, in_pool
from tfbig.serving.server.metrics import ServerMetrics
from tfbig.serving.server.request_logger import RequestLogger, Sample, predict_request
from tfbig.serving.server.runner import response_spec
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
                 reply, headers: dict[str, str], request_log: RequestLogger | None = None):
        self._core = core
        self._metrics = metrics
        self._request_log = request_log
        self._pool = pool
        self._timeout = timeout_s
        self._reply = reply
        self._headers = {**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

    async def handle(self, request: web.Request, match: re.Match, body: bytes) -> web.StreamResponse:
        """Answer a request whose path matched STREAM_PATH."""
        start = time.perf_counter()
        model_name, sample = "", None
        try:
            spec = model_spec(*match.groups())
            spec.signature_name = GENERATE
            model_name = spec.name
            sample = self._sample(spec, body)
            opened = await asyncio.wait_for(in_pool(self._pool, _open, self._core, spec, body,
                                                    on_abandoned=_close_opened), self._timeout)
        except ServingError as error:
            opened = error
        except asyncio.TimeoutError:
            opened = deadline_exceeded()
        if isinstance(opened, ServingError):
            self._finish(model_name, sample, opened.code, opened.message, start)
            return self._reply(opened.http_status, {REST_ERROR: opened.message})
        stream, step = opened
        if sample is not None:
            sample.request = functools.partial(predict_request, spec, stream.inputs)
        code, message = grpc.StatusCode.CANCELLED, "the client went"  # unless the stream is done or fails
        try:
            response = web.StreamResponse(headers=self._headers)
            await response.prepare(request)
            while True:
                self._metrics.record_stream_token(model_name)
                await response.write(sse.event(sse.STEP, {"text": step.text, "token": step.token}))
                if step.done:
                    await response.write(sse.event(sse.DONE, {"text": stream.text, "tokens": stream.tokens}))
                    code, message = grpc.StatusCode.OK, ""
                    if sample is not None:
                        sample.response = functools.partial(
                            predict_response, response_spec(spec, stream.version, GENERATE), stream.outputs())
                    break
                if _disconnected(request):
                    break
                step = await in_pool(self._pool, _step, stream)
                if isinstance(step, ServingError):
                    code, message = step.code, step.message
                    await response.write(sse.event(sse.ERROR, {REST_ERROR: step.message, "code": code.name}))
                    break
        except ConnectionError:  # the client went while an event was written
            pass
        finally:
            stream.close()
            self._finish(model_name, sample, code, message, start)
        return response

    def _sample(self, spec, body: bytes) -> Sample | None:
        """The request log's sample of this stream, logged as a generate Predict, if it takes it."""
        sample = self._request_log.sample("predict", spec.name) if self._request_log else None
        if sample is not None:
            sample.name_model(spec)
            sample.size = len(body)
        return sample

    def _finish(self, model_name: str, sample: Sample | None, code: grpc.StatusCode, message: str,
                start: float) -> None:
        seconds = time.perf_counter() - start
        self._metrics.record(model_name, API, "REST", code, seconds)
        if sample is not None:
            self._request_log.submit(sample, code, message, seconds, "REST")
