"""`:generate_stream` on the embedded server and `generate_stream` in both clients, over real
sockets on 127.0.0.1: streamed text equals the `generate` signature's, greedy and seeded; each
event carries its token; a client that goes away stops the generation; errors before the first
token are TF Serving's JSON, errors after it an `error` event. An untrained byte GPT (its random
bytes are seldom UTF-8, which the pieces must survive) keeps the module fast."""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time

import grpc
import pytest
import requests

from tfbig.export import export_model
from tfbig.serving import AsyncClient, Client, ServingError, sse
from tfbig.serving.client import wire
from tfbig.serving.codec import from_tensor_proto
from tfbig.serving.request_log import outcome, read_logs
from tfbig.serving.server.streaming import GenerationStream

from readme import readme_block, run_block
from serving_models import model_config_text, save_two_inputs, start_server, untrained_gpt

NON_ASCII = "naïve café — 日本語 🎉"
MAX_LEN = 256
METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    export_model(untrained_gpt(root / "run", max_len=MAX_LEN), str(root / "models" / "gpt"))
    save_two_inputs(root / "models" / "pair")  # a model without a stream
    config = root / "models.config"
    config.write_text(model_config_text({name: str(root / "models" / name) for name in ("gpt", "pair")}))
    srv = start_server(config, "--max_request_bytes=100000", f"--prometheus_path={METRICS}")
    yield srv
    srv.stop()


def body(text="def ", n=8, **sampling) -> dict:
    return {"inputs": {"text": text, "max_new_tokens": n, "temperature": 0.0, "top_k": 0, "seed": 0, **sampling}}


def post(server, doc=None, *, path="/v1/models/gpt:generate_stream", raw=None) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{server.rest_port}{path}",
                         data=raw if raw is not None else json.dumps(doc), timeout=60)


def events(response: requests.Response) -> list[tuple[str, dict]]:
    """The reply's events, read by hand rather than by the client's parser."""
    parsed = []
    for block in response.content.decode().split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            parsed.append((fields.get("event", "message"), json.loads(fields["data"])))
    return parsed


def series(server, line_prefix: str) -> float:
    """The value of the metrics page's series written as `line_prefix` (name and labels)."""
    page = requests.get(f"http://127.0.0.1:{server.rest_port}{METRICS}", timeout=30).text
    values = [line.rsplit(" ", 1)[1] for line in page.splitlines() if line.startswith(line_prefix + " ")]
    return float(values[0]) if values else 0.0


def streamed_tokens(server) -> float:
    return series(server, ':tfbig:serving:generate_stream_tokens{model_name="gpt"}')


def stream_requests(server, status: str) -> float:
    return series(server, f':tensorflow:serving:request_count{{model_name="gpt",status="{status}"}}')


async def async_pieces(target: str, prompt: str, **arguments) -> list[str]:
    async with AsyncClient(target, protocol="rest") as client:
        return [piece async for piece in client.generate_stream("gpt", prompt, **arguments)]


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "top_k": 40, "seed": 7}, {"temperature": 1.0, "seed": 1}])
def test_streamed_text_equals_the_generate_signatures(server, sampling):
    target = f"127.0.0.1:{server.rest_port}"
    with Client(target, protocol="rest") as client:
        for prompt in ("def ", NON_ASCII):
            expected = client.generate("gpt", [prompt], max_new_tokens=24, **sampling)[0]
            pieces = list(client.generate_stream("gpt", prompt, max_new_tokens=24, **sampling))
            assert "".join(pieces) == expected and len(pieces) > 1
            assert asyncio.run(async_pieces(target, prompt, max_new_tokens=24, **sampling)) == pieces


def test_concurrent_streams_interleave_on_the_pool_without_mixing(server):
    target = f"127.0.0.1:{server.rest_port}"
    sampled = [{"max_new_tokens": 40, "temperature": 1.0, "seed": seed} for seed in range(6)]

    async def streams():
        async with AsyncClient(target, protocol="rest") as client:
            async def joined(arguments):
                return "".join([piece async for piece in client.generate_stream("gpt", "def ", **arguments)])
            return await asyncio.gather(*(joined(arguments) for arguments in sampled))

    with Client(target, protocol="rest") as client:
        expected = [client.generate("gpt", ["def "], **arguments)[0] for arguments in sampled]
    assert asyncio.run(streams()) == expected and len(set(expected)) == len(expected)


def test_each_event_carries_its_token_and_the_last_the_whole_text(server):
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
        expected = client.predict("gpt", wire.generate_inputs(NON_ASCII, max_new_tokens=12, temperature=1.0,
                                                              top_k=0, seed=4), signature="generate")
    text = expected["text"][0].decode("utf-8", "replace")
    prompts = [NON_ASCII, [NON_ASCII], [{"b64": base64.b64encode(NON_ASCII.encode()).decode()}]]
    paths = ["/v1/models/gpt:generate_stream", "/v1/models/gpt/versions/1:generate_stream"]
    for prompt, path in zip(prompts, paths * 2):
        response = post(server, body(prompt, 12, temperature=1.0, seed=4), path=path)
        assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
        *steps, (name, done) = events(response)
        assert [payload["token"] for _, payload in steps] == expected["tokens"][0].tolist()
        assert {name for name, _ in steps} == {"message"} and name == "done"
        assert "".join(payload["text"] for _, payload in steps) == done["text"] == text
        assert done["tokens"] == 12


def test_the_request_log_records_a_stream_as_the_generate_predict_it_equals(server, tmp_path):
    logs = tmp_path / "logs"
    logged = start_server(server.options.model_config_file, f"--request_log_dir={logs}")
    try:
        with Client(f"127.0.0.1:{logged.rest_port}", protocol="rest") as client:
            text = "".join(client.generate_stream("gpt", "def ", max_new_tokens=8))
        refused = requests.post(f"http://127.0.0.1:{logged.rest_port}/v1/models/gpt:generate_stream",
                                json={"inputs": {"text": "x", "max_new_tokens": 0}}, timeout=60)
        assert refused.status_code == 400
    finally:
        logged.stop()  # drains the log
    done, failed = read_logs(str(logs))
    assert (outcome(done).code, outcome(done).entrypoint) == (0, "REST")
    request, response = done.predict_log.request, done.predict_log.response
    assert (request.model_spec.name, request.model_spec.signature_name) == ("gpt", "generate")
    assert from_tensor_proto(request.inputs["text"]).tolist() == [b"def "]
    assert int(from_tensor_proto(request.inputs["max_new_tokens"])) == 8
    assert from_tensor_proto(response.outputs["text"]).tolist() == [text.encode()]
    assert from_tensor_proto(response.outputs["tokens"]).shape == (1, 8)
    assert response.model_spec.version.value == 1 and done.log_metadata.model_spec.signature_name == "generate"
    assert outcome(failed).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not failed.predict_log.HasField("response") and outcome(failed).error_message


def test_a_client_that_stops_reading_stops_the_generation(server):
    """A stream of 250 tokens takes a good part of a second; the client leaves after its first piece."""
    target = f"127.0.0.1:{server.rest_port}"

    def leave_early_sync():
        with Client(target, protocol="rest") as client:
            for _ in client.generate_stream("gpt", "x", max_new_tokens=MAX_LEN - 6):
                break

    async def leave_early_async():
        async with AsyncClient(target, protocol="rest") as client:
            async for _ in client.generate_stream("gpt", "x", max_new_tokens=MAX_LEN - 6):
                break

    for leave_early in (leave_early_sync, lambda: asyncio.run(leave_early_async())):
        tokens, cancelled = streamed_tokens(server), stream_requests(server, "CANCELLED")
        leave_early()
        deadline = time.monotonic() + 30
        while stream_requests(server, "CANCELLED") == cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream_requests(server, "CANCELLED") == cancelled + 1
        computed = streamed_tokens(server) - tokens
        time.sleep(0.3)
        assert streamed_tokens(server) - tokens == computed < (MAX_LEN - 6) / 2


@pytest.mark.parametrize("path, doc, status, message", [
    ("gpt", b"", 400, "JSON Parse error: The document is empty"),
    ("gpt", b"[1]", 400, "Is not object"),
    ("gpt", {"instances": [{"text": "x"}]}, 400, "generate_stream takes the columnar body of a generate :predict"),
    ("gpt", {**body(), "signature_name": "serving_default"}, 400, "runs the generate signature, not 'serving_default'"),
    ("gpt", body(["a", "b"]), 400, "a stream generates for one prompt; 'text' holds 2"),
    ("gpt", {"inputs": {"text": "a"}}, 400, "Missing named input: "),
    ("gpt", body(n="many"), 400, 'JSON Value: "many" Type: String is not of expected type: int32'),
    ("gpt", body(n=MAX_LEN), 400, "assertion failed: [generate: longest prompt (tokens) + max_new_tokens must be "
                                  f"<= max_len {MAX_LEN}, the longest sequence of the model]"),
    ("gpt", body(n=2**31 - 1), 400, f"must be <= max_len {MAX_LEN}"),
    ("gpt", body(n=0), 400, "max_new_tokens must be at least 1"),
    ("gpt", body("x" * 200_000), 413, "larger than the 100000 bytes this server accepts"),
    ("nope", body(), 404, "Servable not found for request: Latest(nope)"),
    ("gpt/versions/9", body(), 404, "Servable not found for request: Specific(gpt, 9)"),
    ("pair", body(), 400, "version 7 of model pair cannot stream: its SavedModel has no generate_start/generate_next"),
])
def test_a_request_that_fails_before_its_first_token_gets_tf_servings_json_error(server, path, doc, status, message):
    raw = doc if isinstance(doc, bytes) else None
    response = post(server, doc, path=f"/v1/models/{path}:generate_stream", raw=raw)
    assert response.status_code == status and response.headers["Content-Type"] == "application/json"
    assert message in response.json()["error"]


def test_a_failure_mid_stream_ends_it_with_an_error_event(server, monkeypatch):
    """The server runs in this process: its third step is made to fail."""
    step = GenerationStream.step

    def failing_step(stream):
        if stream.tokens == 2:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory, say")
        return step(stream)

    monkeypatch.setattr(GenerationStream, "step", failing_step)
    failed = stream_requests(server, "RESOURCE_EXHAUSTED")
    response = post(server, body(n=8))
    assert response.status_code == 200
    assert [name for name, _ in events(response)] == ["message", "message", "error"]
    assert events(response)[-1][1] == {"error": "out of memory, say", "code": "RESOURCE_EXHAUSTED"}
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
        with pytest.raises(ServingError) as error:
            list(client.generate_stream("gpt", "def ", max_new_tokens=8))
    assert (error.value.code, error.value.message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory, say")
    assert stream_requests(server, "RESOURCE_EXHAUSTED") == failed + 2


def test_streams_count_in_the_metrics(server):
    ok, tokens = stream_requests(server, "OK"), streamed_tokens(server)
    timed = series(server, ':tensorflow:serving:request_latency_count{model_name="gpt",API="generate_stream",'
                           'entrypoint="REST"}')
    assert post(server, body(n=5)).status_code == 200
    assert stream_requests(server, "OK") == ok + 1 and streamed_tokens(server) == tokens + 5
    assert series(server, ':tensorflow:serving:request_latency_count{model_name="gpt",API="generate_stream",'
                          'entrypoint="REST"}') == timed + 1


def test_the_client_streams_one_prompt_over_rest(server):
    with Client(f"127.0.0.1:{server.grpc_port}") as client:
        with pytest.raises(ServingError, match="use protocol='rest'") as error:
            next(client.generate_stream("gpt", "x"))
    assert error.value.code == grpc.StatusCode.UNIMPLEMENTED
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
        with pytest.raises(ServingError, match="one prompt") as error:
            next(client.generate_stream("gpt", ["x", "y"]))
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ServingError, match="cannot stream") as error:
            next(client.generate_stream("pair", "x"))
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT  # FAILED_PRECONDITION as HTTP 400


def test_the_stream_reader_takes_any_line_ends_and_knows_a_cut_stream():
    wire_text = (sse.event(sse.STEP, {"text": "a", "token": 97}) + b": a comment\n"
                 + sse.event(sse.STEP, {"text": "", "token": 195}) + sse.event(sse.DONE, {"text": "a", "tokens": 2}))
    for ending in (b"\n", b"\r\n"):
        reader = wire.StreamReader()
        assert [reader.feed(line + ending) for line in wire_text.split(b"\n")[:-1]].count("a") == 1
        assert reader.done
    cut = wire.StreamReader()
    cut.feed(b'data: {"text": "a", "token": 97}')
    cut.feed(b"")
    with pytest.raises(ServingError, match="ended before its done event"):
        cut.check_done()


def test_readme_streaming_examples_run_as_written(server, capsys):
    version = os.path.join(server.manager.config.model_config_list.config[0].base_path, "1")
    run_block(readme_block("loaded.generate_next(", {"models/gpt/1": version}))
    with Client(f"127.0.0.1:{server.rest_port}", protocol="rest") as client:
        assert capsys.readouterr().out == client.generate("gpt", ["def "], max_new_tokens=16)[0] + "\n"
    run_block(readme_block("client.generate_stream(", {"localhost:8501": f"127.0.0.1:{server.rest_port}"}))
    script = readme_block(":generate_stream", {"localhost:8501": f"127.0.0.1:{server.rest_port}"}, language="bash")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("data: {") and "event: done\n" in run.stdout
