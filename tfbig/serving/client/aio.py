"""`AsyncClient`: the asyncio twin of `Client`, for many requests in flight at once.

One grpc.aio channel or one aiohttp session multiplexes any number of
concurrent calls, so `asyncio.gather` over hundreds of requests needs no
threads. Requests and results are built by the same `wire` functions as the
blocking client, so both return identical values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import AsyncIterator

import aiohttp
import grpc
from tensorflow_serving.apis import classification_pb2, get_model_status_pb2, regression_pb2

from tfbig.protocol import GENERATE_SIGNATURE
from tfbig.serving.client import wire
from tfbig.serving.client.base import ClientBase, named_signature, signature_cache_key
from tfbig.serving.errors import ServingError, deadline_exceeded


class AsyncClient(ClientBase):
    """Same arguments and methods as `Client`, awaited. Use inside a running event loop."""

    channels = grpc.aio

    def open_http_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self._ssl_context if self._ssl_context is not None else True)
        return aiohttp.ClientSession(headers=self._http_headers, connector=connector)

    async def _retrying(self, call, timeout):
        deadline = self._deadline(timeout)
        for attempt in itertools.count():
            try:
                return await call(deadline - time.monotonic())
            except ServingError as error:
                pause = self._retry_pause(error, attempt, deadline)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    async def _rpc(self, method, request, timeout):
        async def call(seconds_left):
            try:
                return await method(request, timeout=seconds_left, metadata=self._metadata)
            except grpc.RpcError as error:
                raise ServingError.from_rpc(error) from None
        return await self._retrying(call, timeout)

    @contextlib.contextmanager
    def _http_errors(self):
        """aiohttp's failures as ServingErrors: a timeout, or a connection refused or broken."""
        try:
            yield
        except asyncio.TimeoutError:
            raise deadline_exceeded() from None
        except aiohttp.ClientConnectionError as error:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"cannot reach {self._base_url}: {error}") from None

    async def _send(self, method: str, path: str, timeout: aiohttp.ClientTimeout, body=None, stream: bool = False):
        """One HTTP request; a reply other than 200 is raised as its `{"error": ...}`."""
        with self._http_errors():
            response = await self._session.request(method, self._base_url + path, **wire.json_body(body),
                                                   timeout=timeout)
            if response.status != 200 or not stream:
                async with response:
                    return wire.rest_result(response.status, await response.read())
        return response

    async def _http(self, method: str, path: str, timeout, body=None) -> dict:
        return await self._retrying(
            lambda seconds_left: self._send(method, path, aiohttp.ClientTimeout(total=seconds_left), body), timeout)

    async def _signature(self, spec, timeout=None):
        key = signature_cache_key(spec)
        if key not in self._signatures:
            self._signatures[key] = await self.metadata(spec.name, version=key[1], label=key[2] or None,
                                                        timeout=timeout)
        return named_signature(self._signatures[key], spec)

    async def predict(self, model: str, inputs, signature: str | None = None, version: int | None = None,
                      label: str | None = None, key=None, timeout: float | None = None):
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        inputs = wire.conform_inputs(inputs, await self._signature(spec, timeout), spec)
        if self.protocol == "grpc":
            response = await self._rpc(self._prediction.Predict, wire.predict_request(spec, inputs), timeout)
            return wire.tensor_outputs(response)
        doc = await self._http("POST", wire.rest_path(spec, ":predict"), timeout, wire.predict_body(spec, inputs))
        return wire.rest_outputs(doc, await self._signature(spec))

    async def generate(self, model: str, texts, *, max_new_tokens: int = 32, temperature: float = 0.0,
                       top_k: int = 0, seed: int = 0, version: int | None = None, label: str | None = None,
                       key=None, timeout: float | None = None) -> list[str]:
        inputs = wire.generate_inputs(texts, max_new_tokens=max_new_tokens, temperature=temperature,
                                      top_k=top_k, seed=seed)
        return wire.generated_texts(await self.predict(model, inputs, signature=GENERATE_SIGNATURE,
                                                       version=version, label=label, key=key, timeout=timeout))

    async def generate_stream(self, model: str, text, *, max_new_tokens: int = 32, temperature: float = 0.0,
                              top_k: int = 0, seed: int = 0, version: int | None = None, label: str | None = None,
                              key=None, timeout: float | None = None) -> AsyncIterator[str]:
        """`async for piece in client.generate_stream(...)`: see `Client.generate_stream`."""
        self._require_rest("generate_stream")
        path, body = wire.generate_stream_request(model, text, max_new_tokens=max_new_tokens,
                                                  temperature=temperature, top_k=top_k, seed=seed,
                                                  version=version, label=self._label(label, version, key))

        def send(seconds_left):  # the whole stream may take longer: bound each wait instead
            timeout = aiohttp.ClientTimeout(sock_connect=seconds_left, sock_read=seconds_left)
            return self._send("POST", path, timeout, body, stream=True)

        response = await self._retrying(send, timeout)
        with self._http_errors():
            async with response:
                reader = wire.StreamReader()
                async for line in response.content:
                    if piece := reader.feed(line):
                        yield piece
                    if reader.done:
                        return
                reader.check_done()

    async def classify(self, model: str, examples, context=None, signature: str | None = None,
                       version: int | None = None, label: str | None = None, key=None,
                       timeout: float | None = None):
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        request_input = wire.examples_input(examples, context)
        if self.protocol == "grpc":
            request = classification_pb2.ClassificationRequest(model_spec=spec, input=request_input)
            result = (await self._rpc(self._prediction.Classify, request, timeout)).result
        else:
            doc = await self._http("POST", wire.rest_path(spec, ":classify"), timeout,
                                   wire.examples_body(spec, request_input))
            result = wire.classification_from_json(doc)
        return wire.classify_outputs(result)

    async def regress(self, model: str, examples, context=None, signature: str | None = None,
                      version: int | None = None, label: str | None = None, key=None,
                      timeout: float | None = None):
        spec = wire.model_spec(model, signature, version, self._label(label, version, key))
        request_input = wire.examples_input(examples, context)
        if self.protocol == "grpc":
            request = regression_pb2.RegressionRequest(model_spec=spec, input=request_input)
            result = (await self._rpc(self._prediction.Regress, request, timeout)).result
        else:
            doc = await self._http("POST", wire.rest_path(spec, ":regress"), timeout,
                                   wire.examples_body(spec, request_input))
            result = wire.regression_from_json(doc)
        return wire.regress_outputs(result)

    async def multi_inference(self, model: str, examples, tasks, context=None, version: int | None = None,
                              timeout: float | None = None) -> list:
        self._require_grpc("MultiInference")
        request = wire.multi_inference_request(model, examples, tasks, context, version)
        return wire.multi_inference_outputs(await self._rpc(self._prediction.MultiInference, request, timeout))

    async def metadata(self, model: str, version: int | None = None, label: str | None = None,
                       timeout: float | None = None) -> dict:
        spec = wire.model_spec(model, None, version, label)
        if self.protocol == "grpc":
            response = await self._rpc(self._prediction.GetModelMetadata, wire.metadata_request(spec), timeout)
            return wire.signatures_from_metadata(response)
        return wire.signatures_from_json(await self._http("GET", wire.rest_path(spec, "/metadata"), timeout))

    async def status(self, model: str, version: int | None = None, timeout: float | None = None) -> list[dict]:
        spec = wire.model_spec(model, None, version)
        if self.protocol == "grpc":
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
            response = await self._rpc(self._models.GetModelStatus, request, timeout)
        else:
            response = wire.status_from_json(await self._http("GET", wire.rest_path(spec), timeout))
        return wire.status_entries(response)

    async def reload_config(self, config, timeout: float | None = None) -> None:
        self._require_grpc("HandleReloadConfigRequest")
        await self._rpc(self._models.HandleReloadConfigRequest, wire.reload_config_request(config), timeout)

    async def close(self) -> None:
        if self.protocol == "grpc":
            await self._channel.close()
        else:
            await self._session.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
