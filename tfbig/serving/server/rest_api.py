"""TF Serving's REST API (`/v1/models/...`) on aiohttp.

URL parsing, JSON formats, error bodies `{"error": ...}` and HTTP statuses
follow TF Serving's http_rest_api_handler.cc and util/json_tensor.cc: the JSON
is turned into the same protos the gRPC API takes and handed to the shared
ServingCore. Work runs on a thread pool so the event loop only moves bytes.
tfbig adds what TF Serving users ask for: `GET /v1/models` lists the models,
`/healthz` answers while the process lives, `/readyz` while every model has an
AVAILABLE version and the server is not draining, and `:generate_stream`
streams a language model's text as it is generated (rest_stream.py). The request
log records a REST request as the gRPC request it is equivalent to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time

import grpc
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2, regression_pb2,
)

from tfbig.serving import codec
from tfbig.serving.errors import ServingError, deadline_exceeded, invalid_argument
from tfbig.protocol import (
    REST_ERROR, REST_INPUTS, REST_INSTANCES, REST_OUTPUTS, REST_PREDICTIONS, REST_RESULTS,
    REST_SIGNATURE_NAME, SIGNATURE_DEF_FIELD,
)
from tfbig.serving.server.core import ServingCore, predict_response, server_fault
from tfbig.serving.server.handler_pool import HandlerPool, in_pool
from tfbig.serving.server.metrics import ServerMetrics
from tfbig.serving.server.request_logger import RequestLogger, Sample, predict_request
from tfbig.serving.server.rest_json import (
    columns_to_inputs, examples_input, instances_to_inputs, model_spec, parse_json,
)
from tfbig.serving.server.rest_stream import STREAM_PATH, RestStreams

# TF Serving's own patterns (model_servers/http_rest_api_util.cc).
PREDICTION_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
API_PREFIX = re.compile(r"(?i)/v1/")
# A CORS preflight is answered when it names an origin (http_server.cc).
PREFLIGHT_ORIGIN = re.compile(r"https?://")
# Routes open under --auth_token_file (see auth.py for why).
OPEN_ROUTES = ("healthz", "readyz", "prometheus")
_JSON_OPTIONS = {"always_print_fields_with_no_presence": True}


class RestApi:
    """The request handlers; `app()` wires them into an aiohttp application."""

    def __init__(self, core: ServingCore, metrics: ServerMetrics, *, pool: HandlerPool, timeout_s: float,
                 max_request_bytes: int, prometheus_path: str | None, cors: bool, is_ready, guard=None,
                 request_log: RequestLogger | None = None):
        self._core = core
        self._metrics = metrics
        self._request_log = request_log
        self._pool = pool  # requests run here: a model call or a batch wait would block the loop
        self._timeout = timeout_s if timeout_s > 0 else None
        self._max_bytes = max_request_bytes
        self._prometheus_path = prometheus_path
        self._cors = cors
        self._is_ready = is_ready
        self._guard = guard  # auth.Guard under --auth_token_file
        self._streams = RestStreams(core, metrics, pool=pool, timeout_s=self._timeout, reply=self._reply,
                                    headers=self._headers(), request_log=request_log)

    def app(self) -> web.Application:
        middlewares = [self._guard.rest_middleware(self._is_open, self._reply)] if self._guard else []
        app = web.Application(client_max_size=self._max_bytes, middlewares=middlewares)
        app.router.add_get("/healthz", self._healthz, name=OPEN_ROUTES[0])
        app.router.add_get("/readyz", self._readyz, name=OPEN_ROUTES[1])
        if self._prometheus_path:
            app.router.add_get(self._prometheus_path, self._prometheus, name=OPEN_ROUTES[2])
        app.router.add_route("*", "/{path:.*}", self._v1)
        return app

    @staticmethod
    def _is_open(request: web.Request) -> bool:
        """Reachable without a token: probes, the metrics page, and CORS preflights (a browser
        sends those without credentials)."""
        return request.method == "OPTIONS" or request.match_info.route.name in OPEN_ROUTES

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self._is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), content_type="text/plain")

    async def _v1(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        if not API_PREFIX.match(request.path):
            return self._reply(404, {REST_ERROR: f"Not found: {request.method} {request.path}"})
        if request.method == "OPTIONS":
            return self._preflight(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reply(413, {REST_ERROR: f"Request body is larger than the {self._max_bytes} "
                                              f"bytes this server accepts (--max_request_bytes)"})
        except web.RequestPayloadError as error:  # e.g. a Content-Encoding the body is not in
            reason = str(error).strip().splitlines()[-1].strip()
            return self._reply(400, {REST_ERROR: f"Request body could not be read: {reason}"})
        # The undecoded path, as TF Serving matches it: %2F inside a model name stays in the name.
        path = request.rel_url.raw_path
        if request.method == "POST" and (match := STREAM_PATH.fullmatch(path)):
            return await self._streams.handle(request, match, body)
        sampled: list[Sample] = []  # the request log's sample, if it takes this request
        work = in_pool(self._pool, self._process, request.method, path, body, sampled)
        # As in TF Serving, --rest_api_timeout_in_ms bounds what runs a model (POST), not a
        # status or metadata GET: a tiny timeout must not make a healthy server look unavailable.
        timeout = self._timeout if request.method == "POST" else None
        try:
            model_name, api, payload = await asyncio.wait_for(work, timeout)
            code = grpc.StatusCode.OK
        except asyncio.TimeoutError:
            model_name, api, payload = "", "", deadline_exceeded()
            sampled[:] = [dataclasses.replace(s, response=None) for s in sampled]  # it still runs
        if isinstance(payload, ServingError):
            code = payload.code
            response = self._reply(payload.http_status, {REST_ERROR: payload.message})
        else:
            response = self._reply(200, payload)
        seconds = time.perf_counter() - start
        self._metrics.record(model_name, api, "REST", code, seconds)
        for sample in sampled:
            self._request_log.submit(sample, code, "" if code == grpc.StatusCode.OK else payload.message,
                                     seconds, "REST")
        return response

    def _headers(self) -> dict[str, str]:
        if not self._cors:
            return {}
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type, Authorization"}

    def _reply(self, status: int, payload) -> web.Response:
        return web.Response(body=codec.dumps(payload), status=status, headers=self._headers(),
                            content_type="application/json")

    def _preflight(self, request: web.Request) -> web.Response:
        """A browser asks before it POSTs JSON to another origin; TF Serving answers any
        preflight that names an origin, with the CORS headers when they are enabled."""
        if PREFLIGHT_ORIGIN.search(request.headers.get("Origin", "")):
            return web.Response(status=200, headers=self._headers())
        return self._reply(400, {REST_ERROR: "Origin header is missing in CORS preflight"})

    def _process(self, method: str, path: str, body: bytes, sampled: list):
        """Returns (model name, api, JSON payload or ServingError); runs on the pool. A request
        the request log samples is put in `sampled`."""
        model_name, api = "", ""
        try:
            if method == "POST" and (match := PREDICTION_PATH.fullmatch(path)):
                name, version, label, api = match.groups()
                spec = model_spec(name, version, label)
                model_name = spec.name
                sample = self._request_log.sample(api, model_name) if self._request_log else None
                if sample is not None:
                    sample.name_model(spec)
                    sample.size = len(body)
                    sampled.append(sample)
                return model_name, api, self._post(api.lower(), spec, body, sample)
            # The API label is the URL's :method, as tensorflow_model_server records it; a GET has none.
            if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
                name, version, label, metadata = match.groups()
                if name is None and not (version or label or metadata):
                    return "", api, self._list_models()
                if name is None:
                    raise invalid_argument("Missing model name in request.")
                spec = model_spec(name, version, label)
                model_name = spec.name
                return model_name, api, self._metadata(spec) if metadata else self._status(spec)
            raise invalid_argument(f"Malformed request: {method} {path}")
        except ServingError as error:
            return model_name, api, error.answer()
        except Exception as error:  # a fault of the server's answers 500; it lives on
            return model_name, api, server_fault(api, error)

    def _post(self, method: str, spec: model_pb2.ModelSpec, body: bytes, sample: Sample | None):
        """`sample`, when the request log takes this request, receives its gRPC equivalents."""
        doc = parse_json(body)
        spec.signature_name = doc.get(REST_SIGNATURE_NAME, "")
        if method == "classify":
            request = classification_pb2.ClassificationRequest(model_spec=spec, input=examples_input(doc, method))
            response = self._run_sampled(sample, request, self._core.classify)
            return {REST_RESULTS: [[[c.label, codec.float_to_json(c.score)] for c in item.classes]
                                for item in response.result.classifications]}
        if method == "regress":
            request = regression_pb2.RegressionRequest(model_spec=spec, input=examples_input(doc, method))
            response = self._run_sampled(sample, request, self._core.regress)
            return {REST_RESULTS: [codec.float_to_json(r.value) for r in response.result.regressions]}
        return self._predict(spec, doc, sample)

    def _run_sampled(self, sample: Sample | None, request, run):
        """`run(request)`, the request and its response handed to the request log's sample if any."""
        if sample is not None:
            sample.request = request
        response = run(request, self._timeout)
        if sample is not None:
            sample.response = response
        return response

    def _predict(self, spec: model_pb2.ModelSpec, doc: dict, sample: Sample | None):
        if REST_INSTANCES in doc and REST_INPUTS in doc:
            raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or "
                                   "'instances' keys to exist")
        if REST_INSTANCES in doc:
            instances = doc[REST_INSTANCES]
            if not isinstance(instances, list):
                raise invalid_argument("Expecting 'instances' to be an list/array")
            if not instances:
                raise invalid_argument("No values in 'instances' array")

            def to_inputs(specs, signature):
                return instances_to_inputs(instances, specs, signature, self._core.budget())
        elif REST_INPUTS in doc:
            def to_inputs(specs, signature):
                return columns_to_inputs(doc[REST_INPUTS], specs, signature, self._core.budget())
        else:
            raise invalid_argument("Missing 'inputs' or 'instances' key")

        def decode(servable, signature):
            if signature not in servable.signature_defs:  # as TF Serving words it over REST
                raise invalid_argument(f"Serving signature name: \"{signature}\" not found in signature def")
            inputs = to_inputs(servable.input_specs(signature), signature)
            if sample is not None:
                sample.request = functools.partial(predict_request, spec, inputs)
            return inputs

        served, outputs = self._core.run_predict(spec, decode, timeout=self._timeout)
        if sample is not None:
            sample.response = functools.partial(predict_response, served, outputs)
        if REST_INSTANCES in doc:
            return {REST_PREDICTIONS: codec.rows_to_json(outputs)}
        return {REST_OUTPUTS: codec.columns_to_json(outputs)}

    def _status(self, spec: model_pb2.ModelSpec) -> dict:
        response = self._core.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToDict(response, **_JSON_OPTIONS)

    def _metadata(self, spec: model_pb2.ModelSpec) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD])
        response = self._core.metadata(request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
        options = dict(_JSON_OPTIONS, preserving_proto_field_name=True)
        return {"model_spec": json_format.MessageToDict(response.model_spec, **options),
                "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(signatures, **options)}}

    def _list_models(self) -> dict:
        models = []
        for name in self._core.manager.model_names():
            try:
                status = self._status(model_pb2.ModelSpec(name=name))
            except ServingError:
                status = {"model_version_status": []}
            models.append({"name": name, **status})
        return {"models": models}
