"""The one request the pipeline sends a served model to see it answer, and how it tells a
user to send it again: the same prompt and settings in the smoke query, the curl line and
the Python line."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from tfbig.protocol import (
    DEFAULT_SIGNATURE, GENERATE_SIGNATURE, INPUT_KEY, LOGITS, REST_INPUTS, REST_SIGNATURE_NAME,
)


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    """A greedy continuation of a short prompt: every GPT served by tfbig has `generate`."""

    prompt: str = "def "
    max_new_tokens: int = 24
    label: str = "stable"

    def rest_body(self) -> str:
        """The `:predict` JSON body of TF Serving's REST API (the signature's row format)."""
        return json.dumps({REST_SIGNATURE_NAME: GENERATE_SIGNATURE, REST_INPUTS: {
            "text": [self.prompt], "max_new_tokens": self.max_new_tokens, "temperature": 0.0,
            "top_k": 0, "seed": 0}})

    def python(self, model: str) -> str:
        return (f"Client(\"localhost:8500\").generate({json.dumps(model)}, [{json.dumps(self.prompt)}], "
                f"max_new_tokens={self.max_new_tokens}, label={json.dumps(self.label)})")


SMOKE = GenerateRequest()


def smoke_query(target: str, model: str, *, gpt: bool, inputs: np.ndarray, label: str = "canary",
                credentials=None) -> dict:
    """One real request through the bundled client: `SMOKE` to a GPT, the eval example
    `inputs` otherwise; what serving.json records of it. `credentials`: a
    `tfbig.serving.Credentials` for a server that asks for them."""
    from tfbig.serving import Client

    kwargs = credentials.client_kwargs() if credentials is not None else {}
    with Client(target, timeout=60.0, **kwargs) as client:
        start = time.perf_counter()
        if gpt:
            (text,) = client.generate(model, [SMOKE.prompt], max_new_tokens=SMOKE.max_new_tokens, label=label)
            signature, shown, response = GENERATE_SIGNATURE, f"generate {SMOKE.prompt!r}", repr(text)
        else:
            outputs = client.predict(model, {INPUT_KEY: inputs}, label=label)
            signature, shown = DEFAULT_SIGNATURE, "one eval example"
            response = f"class {int(np.argmax(outputs[LOGITS][0]))}"
        latency_ms = (time.perf_counter() - start) * 1e3
    return {"signature": signature, "request": shown, "response": response,
            "latency_ms": round(latency_ms, 3)}


def example_inputs(version_path: str) -> np.ndarray:
    """One real eval example (batch of 1), from the requests recorded at export."""
    from tfbig.config import ConfigError
    from tfbig.export.warmup import EXPECTED_FILE, read_warmup
    from tfbig.serving import codec

    path = os.path.join(version_path, EXPECTED_FILE)
    for log in read_warmup(path):
        request = log.predict_log.request
        if request.model_spec.signature_name == DEFAULT_SIGNATURE:
            return codec.from_tensor_proto(request.inputs[INPUT_KEY])[:1]
    raise ConfigError(f"{path} holds no {DEFAULT_SIGNATURE} request")
