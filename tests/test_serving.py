"""The embedded server and the client over real sockets on 127.0.0.1: every client
method on both protocols, TF Serving's JSON formats and error codes, batching,
hot reload under load, manifest checks, path safety, drain on SIGTERM."""

import asyncio
import concurrent.futures
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2, model_service_pb2_grpc,
    predict_pb2, prediction_service_pb2_grpc, regression_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from tfbig.serving import (
    AsyncClient, Client, EmbeddedServer, ServeConfigError, ServingError, codec, parse_serve_args,
)
from tfbig.cli import main
from tfbig.serving.client import wire
from tfbig.serving.load import measure_latency

from readme import readme_block, run_block
from serving_models import (
    digits_images, export_digits, export_gpt, free_port, labelled_version, model_config_text,
    save_two_inputs, start_server, write_tls_files,
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    export_digits(root / "digits_run", root / "models" / "digits")
    export_gpt(root / "gpt_run", root / "models" / "gpt")
    save_two_inputs(root / "models" / "pair")
    return {name: str(root / "models" / name) for name in ("digits", "gpt", "pair")}


@pytest.fixture(scope="module")
def server(bases, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(model_config_text(bases))
    srv = start_server(config, "--max_request_bytes=1000000",
                       "--prometheus_path=/monitoring/prometheus/metrics")
    yield srv
    srv.stop()


class BlockingAsyncClient:
    """An AsyncClient behind Client's blocking interface: each call is run to completion on
    the wrapper's own event loop, so every test written for Client checks AsyncClient too."""

    def __init__(self, target: str, protocol: str):
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._open(target, protocol))

    @staticmethod
    async def _open(target, protocol):  # grpc.aio and aiohttp bind to the loop they are made in
        return AsyncClient(target, protocol=protocol)

    def __getattr__(self, name):
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))

    def close(self):
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


@pytest.fixture(params=["grpc", "rest", "grpc-async", "rest-async"])
def client(request, server):
    protocol, _, kind = request.param.partition("-")
    target = f"127.0.0.1:{server.grpc_port if protocol == 'grpc' else server.rest_port}"
    c = BlockingAsyncClient(target, protocol) if kind else Client(target, protocol=protocol)
    yield c
    c.close()


def rest(server, method, path, body=None, raw=None):
    response = requests.request(method, f"http://127.0.0.1:{server.rest_port}{path}",
                                data=raw if raw is not None else json.dumps(body) if body is not None else None)
    return response.status_code, response.json()


def in_process(base, version, signature, **inputs):
    function = tf.saved_model.load(os.path.join(base, str(version))).signatures[signature]
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


# --- every client method, both protocols ---------------------------------------------------

@pytest.mark.slow
def test_predict_matches_the_saved_model_in_process(client, bases):
    images = digits_images(5)
    expected = in_process(bases["digits"], 1, "serving_default", inputs=images)["logits"]
    outputs = client.predict("digits", images)
    assert list(outputs) == ["logits"] and outputs["logits"].dtype == np.float32
    np.testing.assert_array_equal(outputs["logits"], expected)
    np.testing.assert_array_equal(client.predict("digits", {"inputs": images}, version=1)["logits"], expected)


def test_classify_and_regress_with_and_without_context(client, bases):
    images = digits_images(3)
    probabilities = tf.nn.softmax(in_process(bases["digits"], 1, "serving_default", inputs=images)["logits"]).numpy()
    examples = [{"inputs": image.ravel()} for image in images]
    result = client.classify("digits", examples, signature="classify")
    assert result["classes"].shape == (3, 10) and result["classes"][0, 4] == "4"
    np.testing.assert_allclose(result["scores"], probabilities, rtol=1e-5, atol=1e-6)
    regressed = client.regress("digits", examples, signature="regress")
    np.testing.assert_allclose(regressed, probabilities.max(axis=1), rtol=1e-5)
    # Context features are merged into each example, the example's own winning.
    with_context = client.classify("digits", [{}], context={"inputs": images[1].ravel()}, signature="classify")
    np.testing.assert_allclose(with_context["scores"][0], probabilities[1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gpt_predict_and_generate(client, bases):
    tokens = np.frombuffer(b"def main():", dtype=np.uint8).astype(np.int32)[None]
    expected = in_process(bases["gpt"], 1, "serving_default", inputs=tokens)["logits"]
    np.testing.assert_allclose(client.predict("gpt", tokens)["logits"], expected, rtol=1e-6, atol=1e-6)
    request = {"text": np.array([b"def ", b"The object"], dtype=object), "max_new_tokens": 8,
               "temperature": 0.0, "top_k": 0, "seed": 0}
    generated = client.predict("gpt", request, signature="generate")
    reference = in_process(bases["gpt"], 1, "generate", text=request["text"], max_new_tokens=np.int32(8),
                           temperature=np.float32(0), top_k=np.int32(0), seed=np.int64(0))
    assert list(generated["text"]) == list(reference["text"])
    np.testing.assert_array_equal(generated["tokens"], reference["tokens"])
    texts = client.generate("gpt", ["def ", "The object"], max_new_tokens=8)
    assert texts == [text.decode("utf-8", "replace") for text in reference["text"]]


def test_status_and_metadata(client):
    assert client.status("digits") == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]
    signatures = client.metadata("digits")
    assert {"serving_default", "classify", "regress"} <= set(signatures)
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    assert [d.size for d in signatures["serving_default"].inputs["inputs"].tensor_shape.dim] == [-1, 8, 8]


def test_multi_input_model_not_made_by_tfbig(client):
    outputs = client.predict("pair", {"x": np.array([[1, 2], [3, 4.5]], np.float32),
                                      "tag": np.array([b"a", b"\x00b"], dtype=object)})
    np.testing.assert_array_equal(outputs["total"], [3, 7.5])
    assert list(outputs["tag_bytes"]) == [b"a\xff", b"\x00b\xff"]


def test_errors_carry_the_servers_code(client):
    with pytest.raises(ServingError) as missing:
        client.predict("nope", np.zeros((1, 8, 8), np.float32))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as no_version:
        client.status("digits", version=9)
    assert no_version.value.code == grpc.StatusCode.NOT_FOUND and "version 9" in no_version.value.message
    with pytest.raises(ServingError) as bad_shape:
        client.predict("digits", np.zeros((1, 8, 7), np.float32))
    assert bad_shape.value.code == grpc.StatusCode.INVALID_ARGUMENT and "[?, 8, 8]" in bad_shape.value.message
    with pytest.raises(ServingError) as too_long:  # the test GPT's max_len is 32
        client.predict("gpt", {"text": ["def "], "max_new_tokens": 40, "temperature": 0.0, "top_k": 0,
                               "seed": 0}, signature="generate")
    assert too_long.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The model's own words come first, not TensorFlow's name for the function that raised them.
    assert too_long.value.message.startswith("assertion failed: [generate: longest prompt (tokens) + max_new_tokens")


def test_multi_inference_and_reload_config_over_grpc(server, bases):
    with Client(f"127.0.0.1:{server.grpc_port}") as c:
        images = digits_images(2)
        classified, regressed = c.multi_inference(
            "digits", [{"inputs": i.ravel()} for i in images], [("classify", "classify"), ("regress", "regress")])
        np.testing.assert_allclose(classified["scores"].max(axis=1), regressed, rtol=1e-6)
        config = server.manager.config
        labelled = model_server_config_pb2.ModelServerConfig()
        labelled.CopyFrom(config)
        labelled.model_config_list.config[0].version_labels["stable"] = 1
        c.reload_config(labelled)
        assert c.predict("digits", images, label="stable")["logits"].shape == (2, 10)
        bad = model_server_config_pb2.ModelServerConfig()
        bad.CopyFrom(config)
        bad.model_config_list.config[0].version_labels["canary"] = 5
        with pytest.raises(ServingError) as refused:
            c.reload_config(bad)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        c.reload_config(config)
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as r, pytest.raises(ServingError) as rest_only:
        r.reload_config(config)
    assert rest_only.value.code == grpc.StatusCode.UNIMPLEMENTED

    async def awaited():
        async with AsyncClient(f"127.0.0.1:{server.grpc_port}") as a:
            results = await a.multi_inference("digits", [{"inputs": i.ravel()} for i in images],
                                              [("classify", "classify"), ("regress", "regress")])
            await a.reload_config(config)
            return results

    async_classified, async_regressed = asyncio.run(awaited())
    np.testing.assert_array_equal(async_classified["scores"], classified["scores"])
    np.testing.assert_array_equal(async_regressed, regressed)


def test_async_client_many_concurrent_requests(server):
    images = digits_images(20)

    async def run(protocol, port):
        async with AsyncClient(f"127.0.0.1:{port}", protocol=protocol) as c:
            results = await asyncio.gather(*(c.predict("digits", images[i:i + 1]) for i in range(20)))
            status = await c.status("digits")
        return np.concatenate([r["logits"] for r in results]), status

    with Client(f"127.0.0.1:{server.grpc_port}") as c:
        expected = c.predict("digits", images)["logits"]
    for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
        logits, status = asyncio.run(run(protocol, port))
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        assert status[0]["state"] == "AVAILABLE"


def test_load_generator_counts_requests_and_runs_at_least_min_seconds(server):
    image = digits_images(1)
    target = f"127.0.0.1:{server.grpc_port}"
    counted = measure_latency(target, "grpc", "digits", image, concurrency=4, requests=10)
    assert counted["requests"] == 8 and counted["errors"] == 0  # 10 // 4 per coroutine
    start = time.perf_counter()
    timed = measure_latency(target, "grpc", "digits", image, concurrency=2, requests=2, min_seconds=0.5)
    assert time.perf_counter() - start >= 0.5
    assert timed["requests"] > 2 and timed["errors"] == 0 and timed["p50_ms"] > 0


def test_readme_client_example_runs_and_prints_what_it_says(server, capsys):
    code = readme_block("from tfbig.serving import AsyncClient, Client, ServingError",
                        {"localhost:8500": f"127.0.0.1:{server.grpc_port}",
                         "localhost:8501": f"127.0.0.1:{server.rest_port}"})
    run_block(code)
    printed = capsys.readouterr().out.splitlines()
    # Each print's expected output is the comment after it, in the order they run.
    expected = [line.split("#", 1)[1] for line in code.splitlines() if line.lstrip().startswith("print(")]
    assert [line.strip() for line in printed] == [text.strip() for text in expected]


def test_readme_curl_examples_get_tf_servings_answers(server):
    script = readme_block("curl localhost:8501/v1/models/digits ",
                          {"localhost:8501": f"127.0.0.1:{server.rest_port}"}, language="bash")
    # The commands as written; curl itself fails on an error status and ends each answer with a marker.
    curl = 'curl() { command curl -sS --fail-with-body -w "\\n@@@\\n" "$@"; }\n'
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", curl + script], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    status, metadata, predicted, classified, generated = [
        json.loads(answer) for answer in run.stdout.split("@@@") if answer.strip()]
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert "classify" in metadata["metadata"]["signature_def"]["signature_def"]
    assert np.shape(predicted["predictions"]) == (1, 10)
    assert [label for label, _ in classified["results"][0]] == [str(digit) for digit in range(10)]
    assert sorted(generated["outputs"]) == ["text", "tokens"]
    assert len(generated["outputs"]["tokens"][0]) == 16 and generated["outputs"]["text"][0]


def test_a_timeout_bounds_a_call_with_its_retries():
    with Client(f"127.0.0.1:{free_port()}", max_retries=100, backoff_s=0.05, timeout=0.6) as c:
        start = time.monotonic()
        with pytest.raises(ServingError) as error:
            c.status("digits")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 2  # 100 backoffs of up to 2 s each, were they all taken


def test_tls_over_rest_needs_an_https_target_and_certificates_that_load():
    with pytest.raises(ValueError, match="is not https://"):
        Client("http://127.0.0.1:1", protocol="rest", tls=True)
    with pytest.raises(ValueError, match="the client's certificates do not load"):
        Client("127.0.0.1:1", protocol="rest", root_certificates=b"PEM")


def test_unavailable_is_retried_then_raised():
    port = free_port()
    for protocol in ("grpc", "rest"):
        c = Client(f"127.0.0.1:{port}", protocol=protocol, max_retries=2, backoff_s=0.05, timeout=2)
        start = time.monotonic()
        with pytest.raises(ServingError) as error:
            c.status("digits")
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - start >= 0.05 + 0.1  # two backoffs
        c.close()


# --- REST formats and error cases, raw HTTP -------------------------------------------------

def test_rest_row_columnar_and_b64_formats(server):
    x = [[1.0, 2.0], [3.0, 4.0]]
    status, rows = rest(server, "POST", "/v1/models/pair:predict",
                        {"instances": [{"x": x[0], "tag": {"b64": "YQ=="}}, {"x": x[1], "tag": "b"}]})
    assert status == 200
    assert rows == {"predictions": [{"total": 3.0, "tag_bytes": {"b64": "Yf8="}},
                                    {"total": 7.0, "tag_bytes": {"b64": "Yv8="}}]}
    status, columns = rest(server, "POST", "/v1/models/pair/versions/7:predict",
                           {"inputs": {"x": x, "tag": ["a", "b"]}})
    assert status == 200 and columns == {"outputs": {"total": [3.0, 7.0],
                                                     "tag_bytes": [{"b64": "Yf8="}, {"b64": "Yv8="}]}}
    images = digits_images(2).tolist()
    status, single = rest(server, "POST", "/v1/models/digits:predict", {"instances": images})
    assert status == 200 and np.shape(single["predictions"]) == (2, 10)
    status, generated = rest(server, "POST", "/v1/models/gpt:predict", {
        "signature_name": "generate",
        "inputs": {"text": [{"b64": "ZGVmIA=="}], "max_new_tokens": 4, "temperature": 0.0, "top_k": 0, "seed": 1}})
    assert status == 200 and np.shape(generated["outputs"]["tokens"]) == (1, 4)
    assert generated["outputs"]["text"][0].encode() == bytes(generated["outputs"]["tokens"][0])
    status, classified = rest(server, "POST", "/v1/models/digits:classify",
                              {"signature_name": "classify", "examples": [{"inputs": images[0][0] * 0 + [0.5] * 8 * 8}]})
    assert status == 200 and len(classified["results"][0]) == 10 and classified["results"][0][3][0] == "3"


def test_client_casts_python_numbers_only_where_nothing_is_lost():
    signature = meta_graph_pb2.SignatureDef()
    for name, dtype in (("pixels", types_pb2.DT_UINT8), ("ids", types_pb2.DT_INT32), ("x", types_pb2.DT_FLOAT)):
        signature.inputs[name].dtype = dtype
    spec = model_pb2.ModelSpec(name="m")
    conformed = wire.conform_inputs({"pixels": [5, 255], "ids": [7], "x": [1, 2]}, signature, spec)
    assert [conformed[n].dtype for n in ("pixels", "ids", "x")] == [np.uint8, np.int32, np.float32]
    # Values the declared type cannot hold go as they are, for the server to refuse by name.
    unchanged = wire.conform_inputs({"pixels": [-1, 300], "ids": [2 ** 40], "x": [1.5]}, signature, spec)
    assert [unchanged[n].dtype for n in ("pixels", "ids")] == [np.int64, np.int64]
    assert unchanged["ids"][0] == 2 ** 40


def test_json_refuses_tensors_it_cannot_hold_with_tf_servings_message():
    with pytest.raises(ServingError) as error:
        codec.array_to_json(np.array([1 + 2j], np.complex64), strings_as_b64=False)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.message == "Failed to write JSON value for tensor type: complex64"
    bfloat16 = np.array([1.5, np.nan], tf.bfloat16.as_numpy_dtype)
    assert codec.dumps(codec.array_to_json(bfloat16, strings_as_b64=False)) == b"[1.5,NaN]"


def test_rest_answers_what_tf_serving_accepts(server, bases):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models"
    preflight = requests.options(f"{url}/digits:predict", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 200 and preflight.content == b""
    # Base64 without its padding, or broken by whitespace, decodes as absl's decoder does it.
    status, rows = rest(server, "POST", "/v1/models/pair:predict",
                        {"instances": [{"x": [1.0, 2.0], "tag": {"b64": "YQ"}}, {"x": [3.0, 4.0], "tag": {"b64": "Y\nQ=="}}]})
    assert status == 200 and [row["tag_bytes"] for row in rows["predictions"]] == [{"b64": "Yf8="}] * 2
    # Classify and regress answer under "results", scores as float32 in their shortest form, NaN as NaN.
    examples = [{"inputs": [0.5] * 64}, {"inputs": [3e38] * 64}]  # the second overflows inside: NaN scores
    for method in ("classify", "regress"):
        response = requests.post(f"{url}/digits:{method}", data=json.dumps({"signature_name": method, "examples": examples}))
        assert response.status_code == 200 and "NaN" in response.text
        results = json.loads(response.text)["results"]
        scores = [score for _, score in results[0]] if method == "classify" else results[:1]
        assert scores and all(str(np.float32(score)) in response.text for score in scores)
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
        regressed = client.regress("digits", examples, signature="regress")
        # The client sends a NaN feature as NaN (JSON's null would be refused).
        nan_feature = client.regress("digits", [{"inputs": [float("nan")] * 64}], signature="regress")
    assert regressed.dtype == np.float32 and np.isfinite(regressed[0]) and np.isnan(regressed[1])
    with Client(f"127.0.0.1:{server.grpc_port}") as client:
        np.testing.assert_array_equal(nan_feature, client.regress("digits", [{"inputs": [float("nan")] * 64}],
                                                                  signature="regress"))


def test_tfbig_predict_prints_bytes_outputs_as_b64(server, capsys):
    inputs = json.dumps({"x": [[1.0, 2.0]], "tag": ["a"]})
    assert main(["predict", f"127.0.0.1:{server.grpc_port}", "pair", "--inputs", inputs]) == 0
    assert json.loads(capsys.readouterr().out) == {"total": [3.0], "tag_bytes": [{"b64": "Yf8="}]}


def test_rest_writes_float32_shortest_and_nan_infinity_like_tf_serving(server):
    raw = b'{"instances": [{"x": [NaN, 1.0], "tag": "a"}, {"x": [-Infinity, 2.0], "tag": "b"}, {"x": [0.1, 0.2], "tag": "c"}]}'
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/pair:predict", data=raw)
    assert response.status_code == 200
    assert "NaN" in response.text and "-Infinity" in response.text
    totals = [row["total"] for row in json.loads(response.text)["predictions"]]
    assert np.isnan(totals[0]) and totals[1] == -np.inf
    assert totals[2] == 0.3  # float32(0.1) + float32(0.2) written as 0.3, not 0.30000001192092896
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as c:
        outputs = c.predict("pair", {"x": np.array([[np.nan, 1.0], [np.inf, 1.0]], np.float32), "tag": [b"a", b"b"]})
    assert np.isnan(outputs["total"][0]) and outputs["total"][1] == np.inf


def test_rest_status_and_metadata_json_shapes(server):
    status, body = rest(server, "GET", "/v1/models/digits")
    assert status == 200 and body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    status, body = rest(server, "GET", "/v1/models/digits/versions/1/metadata")
    assert status == 200 and body["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    default = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["inputs"]["dtype"] == "DT_FLOAT"
    assert default["inputs"]["inputs"]["tensor_shape"]["dim"][0] == {"size": "-1", "name": ""}
    status, body = rest(server, "GET", "/v1/models")
    assert status == 200 and {m["name"] for m in body["models"]} == {"digits", "gpt", "pair"}
    assert requests.get(f"http://127.0.0.1:{server.rest_port}/readyz").status_code == 200
    assert requests.get(f"http://127.0.0.1:{server.rest_port}/healthz").status_code == 200


IMAGE = [[0.0] * 8] * 8
ERRORS = [
    ("GET", "/v1/models/digits/versions/99999999999999999999", None, 400,
     "Failed to convert version: 99999999999999999999 to numeric."),
    ("POST", "/v1/models/digits:regress", {"signature_name": "regress", "examples": [{"inputs": [2 ** 64 - 1]}]},
     400, "Feature: inputs has uint64_t element. Only int64_t is supported."),
    ("OPTIONS", "/v1/models/digits:predict", None, 400, "Origin header is missing in CORS preflight"),
    ("POST", "/v1/models/digits:predict", {"instances": [[[True] * 8] * 8]}, 400,
     "JSON Value: true Type: True is not of expected type: float"),
    ("POST", "/v1/models/nope:predict", {"instances": [IMAGE]}, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/digits/versions/3:predict", {"instances": [IMAGE]}, 404, "Specific(digits, 3)"),
    ("POST", "/v1/models/digits/labels/gold:predict", {"instances": [IMAGE]}, 400, "Unrecognized servable version label: gold"),
    ("POST", "/v1/models/digits:predict", {"signature_name": "nope", "instances": [IMAGE]}, 400, "Serving signature name: \"nope\" not found in signature def"),
    ("POST", "/v1/models/digits:explain", {}, 400, "Malformed request: POST /v1/models/digits:explain"),
    ("GET", "/v1/models/digits/versions/x", None, 400, "Malformed request"),
    ("POST", "/v1/models/digits:predict", b"", 400, "The document is empty"),
    ("POST", "/v1/models/digits:predict", b"{\"instances\": [", 400, "JSON Parse error"),
    ("POST", "/v1/models/digits:predict", {"instances": [IMAGE], "inputs": [IMAGE]}, 400, "only one of 'inputs' or 'instances'"),
    ("POST", "/v1/models/digits:predict", {"instances": [IMAGE, IMAGE[:7]]}, 400, "Expecting shape [8, 8] but got: [7, 8]"),
    ("POST", "/v1/models/digits:predict", {"instances": [[[0] * 7 + [0.5]] + IMAGE[1:]]}, 200, ""),
    ("POST", "/v1/models/digits:predict", {"instances": [[["a"] * 8] * 8]}, 400, "is not of expected type: float"),
    ("POST", "/v1/models/gpt:predict", {"instances": [[1.5, 2]]}, 400, "is not of expected type: int32"),
    ("POST", "/v1/models/pair:predict", {"instances": [{"x": [1, 2], "label": "a"}]}, 400, "keys"),
    ("POST", "/v1/models/pair:predict", {"inputs": {"x": [[1, 2]]}}, 400, "Missing named input: tag"),
    ("POST", "/v1/models/pair:predict", {"instances": [[1, 2]]}, 400, "expecting list of objects"),
    ("POST", "/v1/models/digits:predict", {"examples": []}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/digits:classify", {"signature_name": "classify"}, 400, "key 'examples' is expected"),
    ("POST", "/v1/models/digits:predict", {"instances": [[[0.0] * 8] * 8] * 3000}, 413, "larger than"),
    ("POST", "/v1/models/..%2F..%2Fetc:predict", {"instances": [IMAGE]}, 404, "Servable not found"),
]


@pytest.mark.parametrize("method,path,body,code,message", ERRORS, ids=[f"{e[1]}-{e[3]}-{i}" for i, e in enumerate(ERRORS)])
def test_rest_errors_use_tf_servings_codes_and_the_server_stays_healthy(server, method, path, body, code, message):
    raw = body if isinstance(body, bytes) else None
    status, reply = rest(server, method, path, None if raw is not None else body, raw=raw)
    assert status == code, reply
    if code != 200:
        assert list(reply) == ["error"] and message in reply["error"]
    status, reply = rest(server, "POST", "/v1/models/digits:predict", {"instances": [IMAGE]})
    assert status == 200 and len(reply["predictions"]) == 1


def test_grpc_status_codes_for_bad_requests(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))

    def predict(name="digits", signature="", label="", **inputs):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name=signature, version_label=label))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(codec.to_tensor_proto(value))
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=10)
        return error.value.code(), error.value.details()

    image = np.zeros((1, 8, 8), np.float32)
    assert predict(name="nope", inputs=image)[0] == grpc.StatusCode.NOT_FOUND
    # A label the model's config does not give (server_core.cc, GetModelVersionForLabel).
    for model in ("digits", "nope"):
        assert predict(name=model, label="gold", inputs=image) == (
            grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: gold")
    assert predict(signature="nope", inputs=image) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    code, details = predict(inputs=image.astype(np.int32))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "int32" in details and "float" in details
    code, details = predict(pixels=image)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Sent extra: {pixels}" in details
    assert predict(inputs=np.zeros((5000, 8, 8), np.float32))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- hostile requests -----------------------------------------------------------------------

def peak_rss_growth_mb(send) -> float:
    """How far this process's peak RSS (the in-process server's included) rose while `send` ran:
    writing 5 to clear_refs starts the peak (VmHWM) again from the current RSS."""
    def peak_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = peak_kb()
    send()
    return (peak_kb() - before) / 1024


def declared_tensor(dims, dtype=types_pb2.DT_FLOAT, **values) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="digits"))
    proto = request.inputs["inputs"]
    proto.dtype = dtype
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    for field, items in values.items():
        getattr(proto, field).extend(items) if field != "tensor_content" else setattr(proto, field, items)
    return request


def test_a_few_bytes_declaring_a_huge_tensor_are_refused_before_it_is_allocated(server, bases):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    refusals = []

    def send():
        for request in (declared_tensor([2 ** 31, 8, 8]),  # 20 bytes on the wire, 512 GiB declared
                        declared_tensor([1_562_500, 8, 8], float_val=[1.0])):  # 400 MB
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=30)
            refusals.append(refused.value)

    assert peak_rss_growth_mb(send) < 50
    for refused in refusals:
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
        assert "decodes at most 1000000 bytes of inputs per request (--max_tensor_bytes)" in refused.details()
    # Within the limit, TensorFlow's rule holds: a declared shape is filled with the last value.
    reply = stub.Predict(declared_tensor([2, 8, 8], float_val=[0.25, 0.5]), timeout=30)
    filled = np.full((2, 8, 8), 0.5, np.float32)
    filled.flat[0] = 0.25
    expected = in_process(bases["digits"], 1, "serving_default", inputs=filled)["logits"]
    np.testing.assert_allclose(codec.from_tensor_proto(reply.outputs["logits"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("request_, message", [
    (declared_tensor([1, 8, 8], dtype=types_pb2.DT_VARIANT), "input 'inputs' is variant but signature"),
    (declared_tensor([1, 8, 8], dtype=types_pb2.DT_RESOURCE), "input 'inputs' is resource but signature"),
    (declared_tensor([1, 8, 8], dtype=999), "input 'inputs' is unknown DataType 999 but signature"),
    (declared_tensor([1, 8, 8], tensor_content=b"\0" * 8), "carries 8 bytes of tensor_content, but its shape"),
    (declared_tensor([-1, 8, 8]), "negative dimension"),
    (declared_tensor([0, 2 ** 62, 2 ** 62]), "shape [0, 4611686018427387904, 4611686018427387904]"),
    (declared_tensor([1] * 65), "has 65 dimensions"),
], ids=["variant", "resource", "unknown-dtype", "content-size", "negative-dim", "overflow", "rank"])
def test_malformed_tensor_protos_are_invalid_arguments(server, request_, message):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request_, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in refused.value.details()


def test_a_large_json_body_is_refused_without_decoding_it_into_objects(server):
    body = codec.dumps({"instances": [1.0] * 240_000})  # 960 KB, under the server's 1 MB limit
    replies = []
    growth = peak_rss_growth_mb(lambda: replies.append(rest(server, "POST", "/v1/models/digits:predict", raw=body)))
    assert replies[0][0] == 400 and "has shape [240000] but signature" in replies[0][1]["error"]
    assert growth < 20 * len(body) / 1e6, growth  # orjson's float objects, and nothing per instance


@pytest.mark.parametrize("body, message", [
    (b"[" * 100_000, "JSON Parse error"),
    (b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}", "depth limit exceeded"),
    (b'{"instances": [NaN, ' + b"[" * 990 + b"]" * 990 + b"]}", "nested too deeply"),
    (b'{"instances": ' + b"[" * 100 + b"0.5" + b"]" * 100 + b"}", "nested more than 64 deep"),
    (json.dumps({"instances": [IMAGE], "signature_name": "serving_default",
                 "inputs": {"x": [[{"deep": [[[[]]]]}]]}}).encode(), "only one of"),
], ids=["unclosed", "deep-orjson", "deep-nan", "rank", "both-keys"])
def test_deep_json_is_a_client_error(server, body, message):
    status, reply = rest(server, "POST", "/v1/models/digits:predict", raw=body)
    assert status == 400 and message in reply["error"]


@pytest.mark.parametrize("method", ["Predict", "Classify", "GetModelMetadata"])
def test_bytes_that_are_not_the_request_message_are_an_invalid_argument(server, method):
    """grpcio would answer INTERNAL "Exception deserializing request!"; the server parses them itself."""
    call = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}").unary_unary(
        f"/tensorflow.serving.PredictionService/{method}")
    with pytest.raises(grpc.RpcError) as refused:
        call(b"\xff\xff\xff\xff\x0f", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid" in refused.value.details()


def test_a_body_not_in_its_content_encoding_and_lone_surrogates_are_client_errors(server):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/digits:predict"
    reply = requests.post(url, data=b'{"instances": []}', headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 400 and "content-encoding: gzip" in reply.json()["error"]
    status, reply = rest(server, "POST", "/v1/models/pair:predict",
                         raw=b'{"inputs": {"x": [[NaN, 1]], "tag": ["\\ud83d"]}}')
    assert status == 400 and "lone UTF-16 surrogate" in reply["error"]


def test_a_refused_request_leaves_nothing_of_its_body_alive(server):
    # A client error is answered as a value without its traceback, whose frames hold the
    # decoded body; before, every REST thread kept its last refused body (about 10x the
    # bytes on the wire) for as long as it stayed idle.
    count = 54_321  # no other list in this process has this length
    body = b'{"instances": [' + b",".join([b"1.5"] * count) + b"]}"
    for _ in range(4):
        assert rest(server, "POST", "/v1/models/digits:predict", raw=body)[0] == 400

    def alive():
        return sum(isinstance(o, list) and len(o) == count for o in gc.get_objects())

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:  # a pool thread may be just past its answer
        time.sleep(0.05)
    assert alive() == 0


def test_no_hostile_request_above_was_answered_as_a_server_fault(server):
    text = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics").text
    assert 'status="INTERNAL"' not in text


@pytest.mark.slow
def test_grpc_max_threads_bounds_the_requests_handled_at_once(bases, tmp_path):
    # Two concurrent requests with room for both in one batch: with one handler thread the
    # second is not taken until the first is answered, so each runs in a batch of its own.
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"]}))
    sizes = []
    for threads in ("1", "4"):
        srv = start_server(config, f"--grpc_max_threads={threads}", "--enable_batching", "--max_batch_size=8",
                           "--batch_timeout_micros=500000", "--num_batch_threads=1")
        with Client_for(srv) as (c, _), concurrent.futures.ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(c.predict, "digits", digits_images(1)) for _ in range(2)]:
                future.result(30)
        sizes.append(srv.metrics.registry.get_sample_value(
            ":tensorflow:serving:batching_session:processed_batch_size_count", {"model_name": "digits"}))
    assert sizes == [2, 1]


def test_a_request_whose_deadline_passed_while_it_was_queued_is_not_run(server):
    # Under overload requests wait for a handler thread; one whose caller has given up by then
    # is answered at once instead of taking the model's time from the others.
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="digits"))
    request.inputs["inputs"].CopyFrom(codec.to_tensor_proto(digits_images(1)))
    with pytest.raises(ServingError) as late:
        server.core.predict(request, timeout=0.0)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.core.predict(request, timeout=5.0).outputs["logits"].tensor_shape.dim[0].size == 1


def test_a_request_without_model_spec_is_invalid_as_in_tf_serving(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        calls = [(predictions.Predict, predict_pb2.PredictRequest()),
                 (predictions.Classify, classification_pb2.ClassificationRequest()),
                 (predictions.Regress, regression_pb2.RegressionRequest()),
                 (predictions.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest()),
                 (models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())]
        for call, request in calls:
            with pytest.raises(grpc.RpcError) as error:
                call(request, timeout=10)
            assert (error.value.code(), error.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"), type(request).__name__
        # A model_spec that is set but names no model: status looks it up, the others refuse it.
        unnamed = model_pb2.ModelSpec()
        with pytest.raises(grpc.RpcError) as status:
            models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=unnamed), timeout=10)
        assert (status.value.code(), status.value.details()) == (
            grpc.StatusCode.NOT_FOUND, "Could not find any versions of model ")
        with pytest.raises(grpc.RpcError) as predict:
            predictions.Predict(predict_pb2.PredictRequest(model_spec=unnamed), timeout=10)
        assert (predict.value.code(), predict.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_prometheus_metrics_count_requests_by_status(server):
    rest(server, "POST", "/v1/models/nope:predict", {"instances": [IMAGE]})
    rest(server, "POST", "/v1/models/digits:predict", {"instances": [IMAGE]})
    rest(server, "GET", "/v1/models/digits/metadata")
    with Client(f"127.0.0.1:{server.grpc_port}") as c:
        c.predict("digits", digits_images(1))
    text = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics").text
    # Written as tensorflow_model_server writes it: no `_total` or `_created` series, its label
    # values and its bucket bounds, in a page Prometheus' own parser reads.
    lines = text.splitlines()
    assert '# TYPE :tensorflow:serving:request_count counter' in lines
    assert any(line.startswith(':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} ')
               for line in lines)
    assert "_total" not in text and "_created" not in text
    series = 'model_name="digits",API="Predict",entrypoint="GRPC"'
    bounds = [line.split('le="')[1].split('"')[0] for line in lines
              if line.startswith(f":tensorflow:serving:request_latency_bucket{{{series},")]
    assert bounds[:5] == ["10", "18", "32.4", "58.32", "104.976"] and bounds[-2:] == ["1.47476e+09", "+Inf"]
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families[":tensorflow:serving:request_count"].type == "counter"
    timed = {(sample.labels["API"], sample.labels["entrypoint"])
             for sample in families[":tensorflow:serving:request_latency"].samples
             if sample.labels.get("model_name") == "digits" and sample.name.endswith("_count") and sample.value >= 1}
    # API is the gRPC method, or the REST URL's :method as written (none for a GET).
    assert {("Predict", "GRPC"), ("predict", "REST"), ("", "REST")} <= timed


def test_made_up_model_names_cannot_grow_the_metrics_without_bound():
    from tfbig.serving.server.metrics import MAX_MODEL_NAMES, OTHER_MODELS, ServerMetrics

    metrics = ServerMetrics(is_served=lambda name: name == "digits")
    for index in range(3 * MAX_MODEL_NAMES):
        metrics.record(f"made-up-{index}", "Predict", "GRPC", grpc.StatusCode.NOT_FOUND, 0.001)
    metrics.record("digits", "Predict", "GRPC", grpc.StatusCode.OK, 0.001)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    names = {sample.labels["model_name"] for sample in families[":tensorflow:serving:request_count"].samples}
    assert len(names) == MAX_MODEL_NAMES + 2 and {"made-up-0", "digits", OTHER_MODELS} <= names
    others = [s.value for s in families[":tensorflow:serving:request_count"].samples
              if s.labels["model_name"] == OTHER_MODELS]
    assert others == [2 * MAX_MODEL_NAMES]


# --- batching -------------------------------------------------------------------------------

@pytest.mark.slow
def test_batching_returns_exactly_the_unbatched_results(bases, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"], "gpt": bases["gpt"]}))
    images = digits_images(24, seed=1)
    with Client_for(start_server(config)) as (plain, srv):
        expected = [plain.predict("digits", images[i:i + 1 + i % 3])["logits"] for i in range(16)]
        prompt = {"text": np.array([b"x"], dtype=object), "max_new_tokens": 3, "temperature": 0.0,
                  "top_k": 0, "seed": 0}
        generated = plain.predict("gpt", prompt, signature="generate")
    batching = start_server(config, "--enable_batching", "--max_batch_size=8", "--batch_timeout_micros=20000",
                            "--allowed_batch_sizes=4,8", "--num_batch_threads=1")
    with Client_for(batching) as (batched, srv):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: batched.predict("digits", images[i:i + 1 + i % 3])["logits"], range(16)))
        for got, want in zip(results, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # TF Serving's own stub with no deadline (grpc reports 9.2e18 s left) waits as long as it takes.
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="digits"))
        request.inputs["inputs"].CopyFrom(codec.to_tensor_proto(images[1:3]))  # as expected[1]
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        np.testing.assert_allclose(codec.from_tensor_proto(reply.outputs["logits"]), expected[1],
                                   rtol=1e-5, atol=1e-6)
        # generate has scalar inputs, so it is not batchable and runs as is.
        np.testing.assert_array_equal(batched.predict("gpt", prompt, signature="generate")["tokens"],
                                      generated["tokens"])
        metrics = requests.get(f"http://127.0.0.1:{srv.rest_port}/monitoring/prometheus/metrics")
    assert metrics.status_code == 404  # Prometheus is off unless asked for
    sizes = batching.metrics.registry.get_sample_value(
        ":tensorflow:serving:batching_session:processed_batch_size_count", {"model_name": "digits"})
    rows = batching.metrics.registry.get_sample_value(
        ":tensorflow:serving:batching_session:processed_batch_size_sum", {"model_name": "digits"})
    assert sizes < 16 and rows % 4 == 0  # requests were joined, and padded to 4 or 8


class Client_for:
    """A running server and a gRPC client to it, both closed at the end."""

    def __init__(self, srv):
        self.srv = srv
        self.client = Client(f"127.0.0.1:{srv.grpc_port}")

    def __enter__(self):
        return self.client, self.srv

    def __exit__(self, *exc):
        self.client.close()
        self.srv.stop()


def gated_batcher(**fields):
    """A Batcher with one batch thread whose model, once `running` is set, waits for `gate` and
    records each batch's rows in `seen`."""
    from tfbig.serving.protos import BatchingParameters
    from tfbig.serving.server.batching import Batcher

    gate, running, seen = threading.Event(), threading.Event(), []

    def run(signature, inputs):
        running.set()
        gate.wait(10)
        seen.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}

    params = BatchingParameters()
    params.num_batch_threads.value = 1
    for field, value in fields.items():
        getattr(params, field).value = value
    return Batcher(run, params), gate, running, seen


def test_full_batch_queue_is_refused_with_resource_exhausted():
    batcher, gate, running, _ = gated_batcher(max_batch_size=1, max_enqueued_batches=1)
    first = batcher.submit("s", {"x": np.ones((1, 2))})
    assert running.wait(10)  # the only batch thread is now busy with `first`
    second = batcher.submit("s", {"x": np.ones((1, 2))})
    with pytest.raises(ServingError) as full:
        batcher.submit("s", {"x": np.ones((1, 2))})
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and full.value.http_status == 429
    with pytest.raises(ServingError, match="larger than maximum input batch size 1"):
        batcher.submit("s", {"x": np.ones((2, 2))})
    gate.set()
    np.testing.assert_array_equal(first.result(5)["y"], 2 * np.ones((1, 2)))
    assert second.result(5)["y"].shape == (1, 2)
    batcher.stop()


def test_a_batched_request_past_its_deadline_is_answered_and_left_out_of_its_batch():
    batcher, gate, running, seen = gated_batcher(max_batch_size=8)
    busy = batcher.submit("s", {"x": np.ones((1, 2))})
    assert running.wait(10)  # the only batch thread is now busy with `busy`
    late = batcher.submit("s", {"x": np.ones((2, 2))})
    kept = batcher.submit("s", {"x": np.full((1, 2), 3.0)})
    with pytest.raises(ServingError) as expired:
        late.result(0.05)
    assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    gate.set()
    np.testing.assert_array_equal(busy.result(5)["y"], 2 * np.ones((1, 2)))
    np.testing.assert_array_equal(kept.result(5)["y"], np.full((1, 2), 6.0))
    assert seen == [1, 1]  # the expired request's two rows never reached the model
    batcher.stop()


def test_large_batch_splitting_tops_up_the_open_batch_and_joins_the_parts_back():
    batcher, gate, running, seen = gated_batcher(max_batch_size=10, max_execution_batch_size=4,
                                                 enable_large_batch_splitting=True, max_enqueued_batches=3)
    busy = batcher.submit("s", {"x": np.ones((1, 2))})
    assert running.wait(10)  # the only batch thread is now busy with `busy`
    small = batcher.submit("s", {"x": np.ones((1, 2))})
    rows = np.arange(14.0).reshape(7, 2)
    large = batcher.submit("s", {"x": rows})  # 3 rows fill `small`'s batch, 4 make a batch of their own
    with pytest.raises(ServingError) as full:  # 9 rows would need 3 more batches; 2 are waiting
        batcher.submit("s", {"x": np.ones((9, 2))})
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    tail = batcher.submit("s", {"x": np.ones((2, 2))})  # fits in the one batch left
    gate.set()
    np.testing.assert_array_equal(large.result(5)["y"], 2 * rows)
    for task in (busy, small, tail):
        task.result(5)
    assert seen == [1, 4, 4, 2]
    batcher.stop()


def test_a_split_request_past_its_deadline_leaves_every_part_out():
    batcher, gate, running, seen = gated_batcher(max_batch_size=10, max_execution_batch_size=4,
                                                 enable_large_batch_splitting=True)
    busy = batcher.submit("s", {"x": np.ones((1, 2))})
    assert running.wait(10)
    late = batcher.submit("s", {"x": np.ones((6, 2))})  # parts of 4 and 2 rows
    with pytest.raises(ServingError) as expired:
        late.result(0.05)
    assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    kept = batcher.submit("s", {"x": np.full((2, 2), 5.0)})  # joins the 2-row part's open batch
    gate.set()
    np.testing.assert_array_equal(kept.result(5)["y"], np.full((2, 2), 10.0))
    busy.result(5)
    assert seen == [1, 2]
    batcher.stop()


@pytest.mark.slow
def test_large_batch_splitting_serves_requests_larger_than_a_batch(bases, tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 12 } max_execution_batch_size { value: 4 } "
                      "enable_large_batch_splitting { value: true } allowed_batch_sizes: [2, 4] "
                      "batch_timeout_micros { value: 20000 } num_batch_threads { value: 1 } "
                      "max_enqueued_batches { value: 20 }")  # 50 rows need 13 batches or more
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"]}))
    sizes = [1, 7, 12, 3, 5, 9, 2, 11]
    starts = np.cumsum([0] + sizes[:-1])
    images = digits_images(sum(sizes), seed=2)
    expected = in_process(bases["digits"], 1, "serving_default", inputs=images)["logits"]
    srv = start_server(config, "--enable_batching", f"--batching_parameters_file={params}")
    with Client_for(srv) as (client, _):
        with concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool:
            results = list(pool.map(
                lambda i: client.predict("digits", images[starts[i]:starts[i] + sizes[i]])["logits"],
                range(len(sizes))))
        with pytest.raises(ServingError, match="Task size 13 is larger than maximum input batch size 12"):
            client.predict("digits", digits_images(13))
    for start, size, got in zip(starts, sizes, results):
        np.testing.assert_allclose(got, expected[start:start + size], rtol=1e-5, atol=1e-6)
    batch_size = ":tensorflow:serving:batching_session:processed_batch_size"
    batches = srv.metrics.registry.get_sample_value(f"{batch_size}_count", {"model_name": "digits"})
    at_most_4 = srv.metrics.registry.get_sample_value(f"{batch_size}_bucket", {"model_name": "digits", "le": "4.0"})
    assert batches >= sum(sizes) / 4 and at_most_4 == batches  # every batch ran 4 rows or fewer


# --- model lifecycle ------------------------------------------------------------------------

@pytest.mark.slow
def test_hot_reload_under_load_loses_no_request(bases, tmp_path):
    base = tmp_path / "digits"
    shutil.copytree(os.path.join(bases["digits"], "1"), base / "1")
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                "--model_name=digits", "--file_system_poll_wait_seconds=1"])
    srv = EmbeddedServer.from_options(options).start()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}"))
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="digits"))
    request.inputs["inputs"].CopyFrom(codec.to_tensor_proto(digits_images(2)))
    versions, failures, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                versions.append(stub.Predict(request, timeout=10).model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(error.code())

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        staging = tmp_path / "staging"
        shutil.copytree(base / "1", staging)
        os.rename(staging, base / "2")  # published atomically, as tfbig export does
        with Client(f"127.0.0.1:{srv.grpc_port}") as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and [s["state"] for s in c.status("digits")] != ["AVAILABLE", "END"]:
                time.sleep(0.2)
            assert [(s["version"], s["state"]) for s in c.status("digits")] == [(2, "AVAILABLE"), (1, "END")]
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join()
        srv.stop()
    assert failures == []
    assert versions.count(1) > 0 and versions.count(2) > 0 and versions[-1] == 2


@pytest.mark.slow
def test_a_failed_load_is_retried_and_a_version_out_of_retries_loads_when_published_again(bases, tmp_path):
    base = tmp_path / "digits"
    shutil.copytree(os.path.join(bases["digits"], "1"), base / "1")
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}", "--model_name=digits",
                                "--file_system_poll_wait_seconds=1", "--max_num_load_retries=1",
                                "--load_retry_interval_micros=1000000"])
    srv = EmbeddedServer.from_options(options).start()

    def state_of(client, version, wanted):
        """The version's state once it is `wanted` (or after 30 s); None while the server has not seen it."""
        deadline = time.monotonic() + 30
        while True:
            states = {s["version"]: s["state"] for s in client.status("digits")}
            if states.get(version) == wanted or time.monotonic() > deadline:
                return states.get(version)
            time.sleep(0.1)

    try:
        with Client(f"127.0.0.1:{srv.grpc_port}") as c:
            # Copied in place, not renamed in: the poll sees the SavedModel before its variables.
            shutil.copytree(base / "1", base / "2", ignore=shutil.ignore_patterns("variables"))
            assert state_of(c, 2, "END") == "END" and c.status("digits", version=2)[0]["error_code"]
            shutil.copytree(base / "1" / "variables", base / "2" / "variables")
            assert state_of(c, 2, "AVAILABLE") == "AVAILABLE"  # the retry loaded it

            shutil.copytree(base / "1", base / "3", ignore=shutil.ignore_patterns("variables"))
            assert state_of(c, 3, "END") == "END"
            time.sleep(3)  # its one retry fails too
            shutil.copytree(base / "1" / "variables", base / "3" / "variables")
            time.sleep(3)
            assert c.status("digits", version=3)[0]["state"] == "END"  # out of retries
            shutil.rmtree(base / "3")
            time.sleep(2)
            shutil.copytree(base / "1", tmp_path / "staging")
            os.rename(tmp_path / "staging", base / "3")
            assert state_of(c, 3, "AVAILABLE") == "AVAILABLE"
            assert c.predict("digits", digits_images(1))["logits"].shape == (1, 10)
    finally:
        srv.stop()


@pytest.mark.slow
def test_config_file_polling_adds_models_and_tampered_versions_are_refused(bases, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"]}))
    tampered = tmp_path / "tampered"
    shutil.copytree(bases["digits"], tampered)
    with open(tampered / "1" / "saved_model.pb", "ab") as f:
        f.write(b"\0")
    srv = start_server(config, "--model_config_file_poll_wait_seconds=1")
    try:
        config.write_text(model_config_text({"digits": bases["digits"], "tampered": str(tampered)}))
        with Client(f"127.0.0.1:{srv.grpc_port}") as c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                    "tampered" in srv.manager.model_names() and c.status("tampered")[0]["state"] == "END"):
                time.sleep(0.2)
            [status] = c.status("tampered")
            assert status["state"] == "END" and status["error_code"] == grpc.StatusCode.DATA_LOSS.value[0]
            assert "saved_model.pb: sha256 differs" in status["error_message"]
            with pytest.raises(ServingError) as error:
                c.predict("tampered", digits_images(1))
            assert error.value.code == grpc.StatusCode.NOT_FOUND
            assert c.predict("digits", digits_images(1))["logits"].shape == (1, 10)
    finally:
        srv.stop()


def test_nothing_outside_a_base_path_is_loaded(bases, tmp_path):
    with pytest.raises(ServeConfigError, match="not allowed"):
        parse_and_build = EmbeddedServer.from_options(parse_serve_args([f"--model_base_path={bases['digits']}",
                                                           "--model_name=../digits"]))
        del parse_and_build
    base = tmp_path / "escape"
    base.mkdir()
    os.symlink(os.path.join(bases["digits"], "1"), base / "3")  # points outside the base path
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                "--model_name=escape", "--file_system_poll_wait_seconds=0"])
    srv = EmbeddedServer.from_options(options).start()
    try:
        with Client(f"127.0.0.1:{srv.grpc_port}") as c, pytest.raises(ServingError) as error:
            c.status("escape")
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert not srv.ready()
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize("taken_flag,protocol", [("--port", "gRPC"), ("--rest_api_port", "REST")])
def test_a_port_in_use_is_a_clear_error_and_leaves_nothing_running(bases, taken_flag, protocol):
    taken = socket.create_server(("127.0.0.1", 0))  # without SO_REUSEPORT, so no one else can bind it
    port = taken.getsockname()[1]
    ports = {"--port": 0, "--rest_api_port": 0, taken_flag: port}
    srv = EmbeddedServer.from_options(parse_serve_args(["--host=127.0.0.1", f"--model_base_path={bases['digits']}",
                                           "--model_name=digits", "--file_system_poll_wait_seconds=0",
                                           *(f"{flag}={value}" for flag, value in ports.items())]))
    threads_before = {thread.ident for thread in threading.enumerate()}
    with taken, pytest.raises(ServeConfigError, match=f"cannot listen for {protocol} on 127.0.0.1:{port}"):
        srv.start()
    statuses = srv.manager.status(model_pb2.ModelSpec(name="digits"))
    assert [status.state for status in statuses] == [get_model_status_pb2.ModelVersionStatus.END]  # unloaded
    assert [t.name for t in threading.enumerate() if t.ident not in threads_before] == []
    srv.stop()  # what a `finally` does: nothing more to stop, and it returns


def test_only_names_that_parse_as_int64_are_versions(bases, tmp_path):
    base = tmp_path / "digits"
    shutil.copytree(os.path.join(bases["digits"], "1"), base / "1")
    # str.isdigit() takes all three; as versions "٣" would be 3, the latest, and fail to load.
    for name in ("\u00b2", "\u0663", str(2 ** 63)):
        (base / name).mkdir()
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                "--model_name=digits", "--file_system_poll_wait_seconds=0"])
    with Client_for(EmbeddedServer.from_options(options).start()) as (c, _):
        assert [(s["version"], s["state"]) for s in c.status("digits")] == [(1, "AVAILABLE")]


def test_saved_model_tags_choose_the_meta_graph_as_in_tf_serving(tmp_path):
    # A SavedModel exported for an accelerator carries its own tag set, e.g. { serve gpu }.
    path = save_two_inputs(tmp_path / "pair")
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    saved_model.meta_graphs[0].meta_info_def.tags.append("gpu")
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    flags = ["--host=127.0.0.1", "--port=0", f"--model_base_path={tmp_path / 'pair'}", "--model_name=pair"]
    with Client_for(EmbeddedServer.from_options(parse_serve_args(flags)).start()) as (c, _):
        [status] = c.status("pair")
    assert status["state"] == "END" and status["error_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert status["error_message"] == ("Could not find meta graph def matching supplied tags: { serve }. "
                                       "The SavedModel's tag sets: { gpu serve } (pick one with --saved_model_tags)")
    with Client_for(EmbeddedServer.from_options(parse_serve_args(flags + ["--saved_model_tags=serve,gpu"])).start()) as (c, _):
        outputs = c.predict("pair", {"x": np.ones((1, 2), np.float32), "tag": np.array([b"a"], dtype=object)})
    np.testing.assert_array_equal(outputs["total"], [2.0])
    with pytest.raises(ServeConfigError, match="--saved_model_tags 'serve,'"):
        EmbeddedServer.from_options(parse_serve_args(flags + ["--saved_model_tags=serve,"]))


def test_readyz_answers_503_until_every_model_has_an_available_version(bases, tmp_path):
    base = tmp_path / "digits"
    base.mkdir()  # no version yet
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": str(base)}))
    srv = start_server(config, "--file_system_poll_wait_seconds=1")
    readyz = f"http://127.0.0.1:{srv.rest_port}/readyz"
    try:
        response = requests.get(readyz)
        assert (response.status_code, response.json()) == (503, {"ready": False})
        assert requests.get(f"http://127.0.0.1:{srv.rest_port}/healthz").status_code == 200
        shutil.copytree(os.path.join(bases["digits"], "1"), tmp_path / "staging")
        os.rename(tmp_path / "staging", base / "1")
        deadline = time.monotonic() + 30
        while requests.get(readyz).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        response = requests.get(readyz)
        assert (response.status_code, response.json()) == (200, {"ready": True})
        assert rest(srv, "GET", "/v1/models/digits")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        srv.stop()


@pytest.mark.slow
def test_grpc_health_service_answers_from_readiness_and_tells_watchers_of_a_drain(bases, tmp_path):
    base = tmp_path / "digits"
    base.mkdir()  # no version yet
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": str(base)}))
    srv = start_server(config, "--file_system_poll_wait_seconds=1", "--enable_grpc_healthcheck_service")
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)

    def check(service=""):
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    try:
        assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
        shutil.copytree(os.path.join(bases["digits"], "1"), tmp_path / "staging")
        os.rename(tmp_path / "staging", base / "1")
        deadline = time.monotonic() + 30
        while check() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert check() == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:  # as gRPC's default service: the server only
            check("tensorflow.serving.PredictionService")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(2.5)  # two polls of the base path change nothing, so the stream stays quiet
        stopping = threading.Thread(target=srv.stop, args=(5,))
        stopping.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopping.join()
    finally:
        channel.close()
        srv.stop()
    plain = start_server(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{plain.grpc_port}") as channel, \
                pytest.raises(grpc.RpcError) as off:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED  # off unless asked for, as in TF Serving
    finally:
        plain.stop()


@pytest.mark.slow
def test_cli_serve_predict_and_drain_on_sigterm(bases, tmp_path):
    grpc_port, rest_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "tfbig.cli", "serve", "--engine", "embedded", "--host=127.0.0.1",
         f"--port={grpc_port}", f"--rest-api-port={rest_port}", "--model_name=digits",
         f"--model_base_path={bases['digits']}", "--version_labels", "stable=1"],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        with Client(f"127.0.0.1:{grpc_port}", max_retries=60, backoff_s=0.25) as c:
            assert c.status("digits")[0]["state"] == "AVAILABLE"
            assert labelled_version(f"127.0.0.1:{grpc_port}", "digits", "stable") == 1
        image = json.dumps(digits_images(1).tolist())
        predicted = subprocess.run(
            [sys.executable, "-m", "tfbig.cli", "predict", f"127.0.0.1:{rest_port}", "digits", "--protocol",
             "rest", "--inputs", image], capture_output=True, text=True, env=env, timeout=120)
        assert predicted.returncode == 0, predicted.stderr
        assert np.shape(json.loads(predicted.stdout)["logits"]) == (1, 10)
        missing = subprocess.run(
            [sys.executable, "-m", "tfbig.cli", "predict", f"127.0.0.1:{grpc_port}", "nope", "--inputs", image],
            capture_output=True, text=True, env=env, timeout=120)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "draining" in stderr and "stopped" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_drain_finishes_requests_in_flight_and_refuses_new_ones(bases, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"]}))
    # A lone request waits out the 2 s batch timeout on the server: in flight when the drain begins.
    srv = start_server(config, "--enable_batching", "--max_batch_size=8", "--batch_timeout_micros=2000000",
                       "--num_batch_threads=1")
    image = digits_images(1)
    expected = in_process(bases["digits"], 1, "serving_default", inputs=image)["logits"]
    url = f"http://127.0.0.1:{srv.rest_port}/v1/models/digits:predict"
    with Client(f"127.0.0.1:{srv.grpc_port}", max_retries=0) as c, \
            concurrent.futures.ThreadPoolExecutor(3) as pool:
        c.metadata("digits")  # the client's signature lookup, done before the drain
        by_grpc = pool.submit(c.predict, "digits", image)
        by_rest = pool.submit(requests.post, url, data=json.dumps({"instances": image.tolist()}))
        deadline = time.monotonic() + 10
        while srv.manager.status(model_pb2.ModelSpec(name="digits"))[0].in_flight < 2:
            assert time.monotonic() < deadline and not by_grpc.done() and not by_rest.done()
            time.sleep(0.02)
        stopping = pool.submit(srv.stop)
        deadline = time.monotonic() + 10
        while accepts_connections(srv.rest_port) and time.monotonic() < deadline:
            time.sleep(0.02)  # gRPC's listener closes first, then REST's
        assert not by_grpc.done() and not by_rest.done() and not srv.ready()
        with pytest.raises(ServingError) as refused:
            c.predict("digits", image, timeout=5)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(requests.ConnectionError):
            requests.post(url, data=json.dumps({"instances": image.tolist()}), timeout=5)
        np.testing.assert_allclose(by_grpc.result(10)["logits"], expected, rtol=1e-5, atol=1e-6)
        answered = by_rest.result(10)
        assert answered.status_code == 200, answered.text
        np.testing.assert_allclose(answered.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
        stopping.result(10)
    assert srv.manager.status(model_pb2.ModelSpec(name="digits"))[0].state == get_model_status_pb2.ModelVersionStatus.END


@pytest.mark.slow
def test_version_policies_choose_versions(bases, tmp_path):
    base = tmp_path / "digits"
    for version in (1, 2, 3):
        shutil.copytree(os.path.join(bases["digits"], "1"), base / str(version))
    expected = {"latest:2": [3, 2], "all": [3, 2, 1], "specific:1,3": [3, 1]}
    for policy, versions in expected.items():
        options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                    "--model_name=digits", f"--model_version_policy={policy}",
                                    "--file_system_poll_wait_seconds=0", "--enable_model_warmup=false"])
        with Client_for(EmbeddedServer.from_options(options).start()) as (c, _):
            assert [s["version"] for s in c.status("digits")] == versions, policy
            assert c.predict("digits", digits_images(1), version=versions[-1])["logits"].shape == (1, 10)


@pytest.mark.slow
def test_warmup_records_are_replayed_before_a_version_is_available(bases, tmp_path):
    from tfbig.export.warmup import WARMUP_FILE, predict_log, write_warmup

    base = tmp_path / "digits"
    shutil.copytree(os.path.join(bases["digits"], "1"), base / "1")
    os.remove(base / "1" / "assets.extra" / "tfbig_manifest.json")  # the warmup file is edited below
    write_warmup(str(base / "1"), [predict_log("serving_default", {"pixels": np.zeros((1, 8, 8), np.float32)})])
    assert os.path.exists(base / "1" / WARMUP_FILE)
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                "--model_name=digits", "--file_system_poll_wait_seconds=0"])
    with Client_for(EmbeddedServer.from_options(options).start()) as (c, _):
        [status] = c.status("digits")
    assert status["state"] == "END" and "Sent extra: {pixels}" in status["error_message"]
    skipped = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={base}",
                                "--model_name=digits", "--enable_model_warmup=false"])
    with Client_for(EmbeddedServer.from_options(skipped).start()) as (c, _):
        assert c.status("digits")[0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_request_limits_and_deadlines(bases, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"digits": bases["digits"], "gpt": bases["gpt"]}))
    srv = start_server(config, "--max_request_batch_size=4", "--rest_api_timeout_in_ms=1")
    try:
        with Client(f"127.0.0.1:{srv.grpc_port}") as c, pytest.raises(ServingError) as too_many:
            c.predict("digits", digits_images(5))
        assert too_many.value.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 4" in too_many.value.message
        long_generation = {"text": [{"b64": "YQ=="}] * 4, "max_new_tokens": 30, "temperature": 0.0,
                           "top_k": 0, "seed": 0}
        status, reply = rest(srv, "POST", "/v1/models/gpt:predict",
                             {"signature_name": "generate", "inputs": long_generation})
        assert status == 504 and reply == {"error": "Deadline Exceeded"}
        # still serving; the deadline bounds model runs, not status GETs (as in TF Serving)
        assert rest(srv, "GET", "/v1/models/digits")[0] == 200
    finally:
        srv.stop()


@pytest.mark.slow
def test_grpc_over_tls(bases, tmp_path):
    _, cert, ssl_config = write_tls_files(tmp_path)
    options = parse_serve_args(["--host=127.0.0.1", "--port=0", f"--model_base_path={bases['digits']}",
                                "--model_name=digits", f"--ssl_config_file={ssl_config}",
                                "--file_system_poll_wait_seconds=0"])
    srv = EmbeddedServer.from_options(options).start()
    try:
        with Client(f"127.0.0.1:{srv.grpc_port}", root_certificates=cert) as secure:
            assert secure.predict("digits", digits_images(1))["logits"].shape == (1, 10)
        with Client(f"127.0.0.1:{srv.grpc_port}", max_retries=0, timeout=5) as plain, \
                pytest.raises(ServingError) as refused:
            plain.status("digits")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()
