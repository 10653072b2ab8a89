"""`Client`: TF Serving's gRPC and REST APIs behind one numpy-in, numpy-out interface.

Works against `tensorflow_model_server` and tfbig's embedded server alike. One
channel (gRPC) or one HTTP session (REST) is kept per client and reused, since
opening a connection costs more than a small request. Failures are raised as
`ServingError(code, message)` whichever the protocol; only UNAVAILABLE
(server restarting, connection refused) is retried, with exponential
backoff, because every other code would fail the same way again. A call's
`timeout` bounds it as a whole, retries included.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Iterator

import grpc
import requests
from requests.adapters import HTTPAdapter
from tensorflow_serving.apis import classification_pb2, get_model_status_pb2, regression_pb2

from tfbig.protocol import GENERATE_SIGNATURE
from tfbig.serving.client import wire
from tfbig.serving.client.base import ClientBase, named_signature, signature_cache_key
from tfbig.serving.errors import ServingError, deadline_exceeded


class _ContextAdapter(HTTPAdapter):
    """requests takes certificates as file paths only; this adapter connects with an SSLContext
    built from the client's PEM bytes instead."""

    def __init__(self, context):
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, ssl_context=self._context, **kwargs)


class Client(ClientBase):
    """A TF Serving client.

    `target` is `host:port` for gRPC or `http(s)://host:port` (or `host:port`) for
    REST. For TLS on either protocol pass `tls=True` (the server is verified with grpc's
    bundled public roots, or the system's over REST) or `root_certificates` (PEM bytes), plus
    `private_key`/`certificate_chain` for mutual TLS. `token` is sent as `authorization:
    Bearer TOKEN` with every request (gRPC metadata, HTTP header); a server that refuses it
    answers UNAUTHENTICATED (HTTP 401), raised as a ServingError like any other failure.
    `split={"stable": 0.9, "canary": 0.1}` sends each request to a label chosen by a stable
    hash of its `key` (the call's, else the client's): see tfbig.serving.client.split.
    """

    def open_http_session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self._http_headers)
        if self._ssl_context is not None:
            session.mount("https://", _ContextAdapter(self._ssl_context))
        return session

    # --- plumbing --------------------------------------------------------------

    def _retrying(self, call, timeout):
        """`call(seconds left)` until it succeeds or `_retry_pause` gives up."""
        deadline = self._deadline(timeout)
        for attempt in itertools.count():
            try:
                return call(deadline - time.monotonic())
            except ServingError as error:
                pause = self._retry_pause(error, attempt, deadline)
                if pause is None:
                    raise
                time.sleep(pause)

    def _rpc(self, method, request, timeout):
        def call(seconds_left):
            try:
                return method(request, timeout=seconds_left, metadata=self._metadata)
            except grpc.RpcError as error:
                raise ServingError.from_rpc(error) from None
        return self._retrying(call, timeout)

    @contextlib.contextmanager
    def _http_errors(self):
        """requests' failures as ServingErrors: a timeout, or a connection refused or broken."""
        try:
            yield
        except requests.Timeout:
            raise deadline_exceeded() from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"cannot reach {self._base_url}: {error}") from None

    def _send(self, method: str, path: str, seconds_left: float, body=None, stream: bool = False):
        """One HTTP request; a reply other than 200 is raised as its `{"error": ...}`."""
        with self._http_errors():
            response = self._session.request(method, self._base_url + path, **wire.json_body(body),
                                             timeout=seconds_left, stream=stream)
            if response.status_code != 200 or not stream:
                with response:
                    return wire.rest_result(response.status_code, response.content)
        return response

    def _http(self, method: str, path: str, timeout, body=None) -> dict:
        return self._retrying(lambda seconds_left: self._send(method, path, seconds_left, body), timeout)

    def _signature(self, spec, timeout=None):
        """The signature a request uses, fetched once per model version/label."""
        key = signature_cache_key(spec)
        if key not in self._signatures:
            self._signatures[key] = self.metadata(spec.name, version=key[1], label=key[2] or None,
                                                  timeout=timeout)
        return named_signature(self._signatures[key], spec)

    # --- PredictionService -----------------------------------------------------

    def predict(self, model: str, inputs, signature: str | None = None, version: int | None = None,
                label: str | None = None, key=None, timeout: float | None = None):
        """Run a signature; `inputs` is a dict of name -> array (or one array for one input)."""
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        inputs = wire.conform_inputs(inputs, self._signature(spec, timeout), spec)
        if self.protocol == "grpc":
            response = self._rpc(self._prediction.Predict, wire.predict_request(spec, inputs), timeout)
            return wire.tensor_outputs(response)
        doc = self._http("POST", wire.rest_path(spec, ":predict"), timeout, wire.predict_body(spec, inputs))
        return wire.rest_outputs(doc, self._signature(spec))

    def generate(self, model: str, texts, *, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int = 0, seed: int = 0, version: int | None = None, label: str | None = None,
                 key=None, timeout: float | None = None) -> list[str]:
        """Continue each prompt with a language model's `generate` signature (the tokenizer
        runs in the served graph); temperature 0 is greedy, top_k 0 no filter."""
        inputs = wire.generate_inputs(texts, max_new_tokens=max_new_tokens, temperature=temperature,
                                      top_k=top_k, seed=seed)
        return wire.generated_texts(self.predict(model, inputs, signature=GENERATE_SIGNATURE,
                                                 version=version, label=label, key=key, timeout=timeout))

    def generate_stream(self, model: str, text, *, max_new_tokens: int = 32, temperature: float = 0.0,
                        top_k: int = 0, seed: int = 0, version: int | None = None, label: str | None = None,
                        key=None, timeout: float | None = None) -> Iterator[str]:
        """Continue one prompt, yielding its text as it is generated (tfbig's `:generate_stream`,
        REST only). The pieces join to what `generate` returns for the prompt; stopping early
        (break, close()) closes the connection, which stops the server's generation. `timeout`
        bounds the wait for the stream to start and then for each piece."""
        self._require_rest("generate_stream")
        path, body = wire.generate_stream_request(model, text, max_new_tokens=max_new_tokens,
                                                  temperature=temperature, top_k=top_k, seed=seed,
                                                  version=version, label=self._label(label, version, key))
        response = self._retrying(lambda seconds_left: self._send("POST", path, seconds_left, body, stream=True),
                                  timeout)
        with response, self._http_errors():
            reader = wire.StreamReader()
            for line in response.iter_lines():
                if piece := reader.feed(line):
                    yield piece
                if reader.done:
                    return
            reader.check_done()

    def classify(self, model: str, examples, context=None, signature: str | None = None,
                 version: int | None = None, label: str | None = None, key=None,
                 timeout: float | None = None):
        """`examples`: dicts of feature -> values (or tf.train.Example); returns classes and scores."""
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        request_input = wire.examples_input(examples, context)
        if self.protocol == "grpc":
            request = classification_pb2.ClassificationRequest(model_spec=spec, input=request_input)
            result = self._rpc(self._prediction.Classify, request, timeout).result
        else:
            doc = self._http("POST", wire.rest_path(spec, ":classify"), timeout,
                             wire.examples_body(spec, request_input))
            result = wire.classification_from_json(doc)
        return wire.classify_outputs(result)

    def regress(self, model: str, examples, context=None, signature: str | None = None,
                version: int | None = None, label: str | None = None, key=None,
                timeout: float | None = None):
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        request_input = wire.examples_input(examples, context)
        if self.protocol == "grpc":
            request = regression_pb2.RegressionRequest(model_spec=spec, input=request_input)
            result = self._rpc(self._prediction.Regress, request, timeout).result
        else:
            doc = self._http("POST", wire.rest_path(spec, ":regress"), timeout,
                             wire.examples_body(spec, request_input))
            result = wire.regression_from_json(doc)
        return wire.regress_outputs(result)

    def multi_inference(self, model: str, examples, tasks, context=None, version: int | None = None,
                        timeout: float | None = None) -> list:
        """gRPC MultiInference: `tasks` is [(signature, "classify"|"regress"), ...] on the same examples."""
        self._require_grpc("MultiInference")
        request = wire.multi_inference_request(model, examples, tasks, context, version)
        return wire.multi_inference_outputs(self._rpc(self._prediction.MultiInference, request, timeout))

    def metadata(self, model: str, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        """The model's SignatureDefs by name (the `signature_def` metadata field)."""
        spec = wire.model_spec(model, None, version, label)
        if self.protocol == "grpc":
            response = self._rpc(self._prediction.GetModelMetadata, wire.metadata_request(spec), timeout)
            return wire.signatures_from_metadata(response)
        return wire.signatures_from_json(self._http("GET", wire.rest_path(spec, "/metadata"), timeout))

    # --- ModelService ----------------------------------------------------------

    def status(self, model: str, version: int | None = None, timeout: float | None = None) -> list[dict]:
        """Version states, newest first, e.g. [{"version": 2, "state": "AVAILABLE", "error_code": 0, ...}].
        No label argument: TF Serving's GetModelStatus ignores labels (GetModelMetadata resolves them)."""
        spec = wire.model_spec(model, None, version)
        if self.protocol == "grpc":
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
            response = self._rpc(self._models.GetModelStatus, request, timeout)
        else:
            response = wire.status_from_json(self._http("GET", wire.rest_path(spec), timeout))
        return wire.status_entries(response)

    def reload_config(self, config, timeout: float | None = None) -> None:
        """Replace the served models with a ModelServerConfig (gRPC only, as in TF Serving)."""
        self._require_grpc("HandleReloadConfigRequest")
        self._rpc(self._models.HandleReloadConfigRequest, wire.reload_config_request(config), timeout)

    def close(self) -> None:
        if self.protocol == "grpc":
            self._channel.close()
        else:
            self._session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

