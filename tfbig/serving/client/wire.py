"""Requests and responses of TF Serving's APIs, built and read for the client.

Pure functions shared by the blocking and the asyncio client: protos for gRPC,
JSON bodies and URLs for REST, and numpy arrays out of either, so both
protocols return exactly the same Python values.
"""

from __future__ import annotations

import urllib.parse

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, input_pb2,
    model_management_pb2, model_pb2, predict_pb2, regression_pb2,
)

from tfbig.protocol import (
    CLASSES, CLASSIFY_METHOD, DEFAULT_SIGNATURE, GENERATE_SIGNATURE, REGRESS_METHOD,
    REST_CONTEXT, REST_ERROR, REST_EXAMPLES, REST_INPUTS, REST_OUTPUTS, REST_RESULTS,
    REST_SIGNATURE_NAME, SCORES, SIGNATURE_DEF_FIELD,
)
from tfbig.serving import codec, sse
from tfbig.serving.errors import ServingError, invalid_argument

GENERATE_STREAM = ":generate_stream"


def model_spec(model: str, signature: str | None = None, version: int | None = None,
               label: str | None = None) -> model_pb2.ModelSpec:
    if version is not None and label is not None:
        raise invalid_argument("give a version or a label, not both")
    spec = model_pb2.ModelSpec(name=model, signature_name=signature or "")
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = label
    return spec


def rest_path(spec: model_pb2.ModelSpec, suffix: str = "") -> str:
    """`/v1/models/NAME[/versions/V | /labels/L]` + `:predict` or `/metadata`."""
    path = f"/v1/models/{urllib.parse.quote(spec.name, safe='')}"
    if spec.HasField("version"):
        path += f"/versions/{spec.version.value}"
    elif spec.version_label:
        path += f"/labels/{urllib.parse.quote(spec.version_label, safe='')}"
    return path + suffix


def single_input_name(signature: meta_graph_pb2.SignatureDef, spec: model_pb2.ModelSpec) -> str:
    if len(signature.inputs) != 1:
        raise invalid_argument(
            f"signature '{spec.signature_name or DEFAULT_SIGNATURE}' of model '{spec.name}' takes "
            f"inputs {sorted(signature.inputs)}: pass a dict of name -> array")
    return next(iter(signature.inputs))


def predict_request(spec: model_pb2.ModelSpec, inputs: dict[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=spec)
    for name, value in inputs.items():
        codec.to_tensor_proto(value, out=request.inputs[name])
    return request


def predict_body(spec: model_pb2.ModelSpec, inputs: dict[str, np.ndarray]) -> dict:
    """Columnar format; strings always as `{"b64": ...}` so any bytes survive."""
    columns = {name: codec.array_to_json(value, strings_as_b64=True) for name, value in inputs.items()}
    body = {REST_INPUTS: columns}
    if spec.signature_name:
        body[REST_SIGNATURE_NAME] = spec.signature_name
    return body


def tensor_outputs(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {name: codec.from_tensor_proto(proto) for name, proto in response.outputs.items()}


def rest_outputs(doc: dict, signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    """`{"outputs": ...}` back to arrays with the signature's dtypes."""
    outputs = doc[REST_OUTPUTS]
    if len(signature.outputs) == 1:
        outputs = {next(iter(signature.outputs)): outputs}
    return {name: codec.json_to_output(value, signature.outputs[name].dtype) for name, value in outputs.items()}


def generate_inputs(texts, *, max_new_tokens: int, temperature: float, top_k: int, seed: int) -> dict:
    """The `generate` signature's inputs: prompts (str or bytes; one prompt alone is a list of one)."""
    texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
    prompts = np.empty(len(texts), dtype=object)
    prompts[:] = [text.encode("utf-8") if isinstance(text, str) else bytes(text) for text in texts]
    return {"text": prompts, "max_new_tokens": np.int32(max_new_tokens), "temperature": np.float32(temperature),
            "top_k": np.int32(top_k), "seed": np.int64(seed)}


def generated_texts(outputs: dict[str, np.ndarray]) -> list[str]:
    """Each prompt's continuation as text (bytes that are not UTF-8 replaced, as a token may
    end mid-character)."""
    return [text.decode("utf-8", errors="replace") for text in outputs["text"]]


def generate_stream_request(model: str, text, *, max_new_tokens: int, temperature: float, top_k: int,
                            seed: int, version: int | None, label: str | None) -> tuple[str, dict]:
    """The path and body of a `:generate_stream` request: a `generate` Predict's, for one prompt."""
    if not isinstance(text, (str, bytes)):
        raise invalid_argument(f"generate_stream streams one prompt (str or bytes), not {type(text).__name__}; "
                               f"use generate for a batch")
    spec = model_spec(model, GENERATE_SIGNATURE, version, label)
    inputs = generate_inputs(text, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             seed=seed)
    return rest_path(spec, GENERATE_STREAM), predict_body(spec, inputs)


class StreamReader:
    """The lines of a `:generate_stream` reply in, its pieces of text out. Both clients feed it,
    each reading lines its own way."""

    def __init__(self):
        self._events = sse.EventParser()
        self.done = False

    def feed(self, line: bytes) -> str:
        """The text this line completes ("" for most lines); raises the stream's error event."""
        event = self._events.feed(line)
        if event is None:
            return ""
        name, payload = event
        if name == sse.ERROR:
            code = getattr(grpc.StatusCode, str(payload.get("code")), grpc.StatusCode.UNKNOWN)
            raise ServingError(code, payload.get(REST_ERROR, ""))
        if name == sse.DONE:
            self.done = True
            return ""
        return payload["text"]

    def check_done(self) -> None:
        """Called when the reply ends: without its `done` event the text is cut short."""
        if not self.done:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "the stream ended before its done event "
                               "(the server stopped or the connection broke)")


def examples_input(examples, context=None) -> input_pb2.Input:
    """Examples given as tf.train.Example protos or dicts of feature name -> values."""
    protos = [codec.example_from_features(e) for e in examples]
    if not protos:
        raise invalid_argument("give at least one example")
    if context is None:
        return input_pb2.Input(example_list=input_pb2.ExampleList(examples=protos))
    return input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext(
        examples=protos, context=codec.example_from_features(context)))


def examples_body(spec: model_pb2.ModelSpec, request_input: input_pb2.Input) -> dict:
    body = {}
    if spec.signature_name:
        body[REST_SIGNATURE_NAME] = spec.signature_name
    if request_input.HasField("example_list_with_context"):
        listed = request_input.example_list_with_context
        body[REST_CONTEXT] = codec.example_to_json(listed.context)
    else:
        listed = request_input.example_list
    body[REST_EXAMPLES] = [codec.example_to_json(e) for e in listed.examples]
    return body


def multi_inference_request(model: str, examples, tasks, context=None,
                            version: int | None = None) -> inference_pb2.MultiInferenceRequest:
    """`tasks`: [(signature, "classify" | "regress"), ...], all run on the same examples."""
    request = inference_pb2.MultiInferenceRequest(input=examples_input(examples, context))
    for signature, method in tasks:
        task = request.tasks.add(method_name={"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}[method])
        task.model_spec.CopyFrom(model_spec(model, signature, version))
    return request


def multi_inference_outputs(response: inference_pb2.MultiInferenceResponse) -> list:
    return [classify_outputs(r.classification_result) if r.HasField("classification_result")
            else regress_outputs(r.regression_result) for r in response.results]


def reload_config_request(config) -> model_management_pb2.ReloadConfigRequest:
    return model_management_pb2.ReloadConfigRequest(config=config)


def classification_from_json(doc: dict) -> classification_pb2.ClassificationResult:
    result = classification_pb2.ClassificationResult()
    for row in doc[REST_RESULTS]:
        classes = result.classifications.add()
        for label, score in row:
            classes.classes.add(label=label, score=score)
    return result


def regression_from_json(doc: dict) -> regression_pb2.RegressionResult:
    result = regression_pb2.RegressionResult()
    for value in doc[REST_RESULTS]:
        result.regressions.add(value=value)
    return result


def classify_outputs(result: classification_pb2.ClassificationResult) -> dict[str, np.ndarray]:
    """`classes` (labels as str) and `scores`, one row per example, one column per class."""
    labels = [[c.label for c in row.classes] for row in result.classifications]
    scores = [[c.score for c in row.classes] for row in result.classifications]
    return {CLASSES: np.array(labels, dtype=object), SCORES: np.array(scores, dtype=np.float32)}


def regress_outputs(result: regression_pb2.RegressionResult) -> np.ndarray:
    return np.array([r.value for r in result.regressions], dtype=np.float32)


def status_from_json(doc: dict) -> get_model_status_pb2.GetModelStatusResponse:
    return json_format.ParseDict(doc, get_model_status_pb2.GetModelStatusResponse())


def status_entries(response: get_model_status_pb2.GetModelStatusResponse) -> list[dict]:
    state = get_model_status_pb2.ModelVersionStatus.State
    return [{"version": s.version, "state": state.Name(s.state),
             "error_code": s.status.error_code, "error_message": s.status.error_message}
            for s in response.model_version_status]


def signatures_from_metadata(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
    return dict(signatures.signature_def)


def signatures_from_json(doc: dict) -> dict:
    signatures = json_format.ParseDict(doc["metadata"][SIGNATURE_DEF_FIELD],
                                       get_model_metadata_pb2.SignatureDefMap())
    return dict(signatures.signature_def)


def metadata_request(spec: model_pb2.ModelSpec) -> get_model_metadata_pb2.GetModelMetadataRequest:
    return get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD])


def _conformed(array: np.ndarray, want: np.dtype) -> np.ndarray:
    """`array` in dtype `want` where that is a cast a caller means: decimals to the declared
    float type, integers to a float type, or to an integer type that holds every value (so
    `[5]` goes to a uint8 input, and 2**40 is not wrapped into an int32). Anything else is
    sent as given, for the server to judge."""
    if array.dtype == want or array.dtype.kind not in "iuf" or want.kind not in "iuf":
        return array
    if want.kind == "f":
        return array.astype(want)
    if array.dtype.kind == "f":
        return array
    limits = np.iinfo(want)
    fits = array.size == 0 or (limits.min <= array.min() and array.max() <= limits.max)
    return array.astype(want) if fits else array


def conform_inputs(inputs, signature: meta_graph_pb2.SignatureDef, spec) -> dict[str, np.ndarray]:
    """Named arrays in the signature's dtypes: Python numbers arrive as int64/float64, and
    casting them to what the signature declares spares every caller from writing `np.int32(8)`."""
    if not isinstance(inputs, dict):
        inputs = {single_input_name(signature, spec): inputs}
    conformed = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        info = signature.inputs.get(name)
        conformed[name] = array if info is None else _conformed(array, codec.numpy_dtype(info.dtype))
    return conformed


def json_body(body: dict | None) -> dict:
    """Keyword arguments that send `body` as JSON (written by `codec.dumps`) from either HTTP client."""
    if body is None:
        return {}
    return {"data": codec.dumps(body), "headers": {"Content-Type": "application/json"}}


def rest_result(status: int, content: bytes) -> dict:
    """A REST reply as JSON, or its `{"error": ...}` as a ServingError."""
    text = content[:500].decode("utf-8", errors="replace")
    try:
        doc = codec.loads(content) if content else {}
    except ValueError:
        doc = {REST_ERROR: text}
    if status != 200:
        message = doc.get(REST_ERROR, text) if isinstance(doc, dict) else text
        raise ServingError.from_http(status, message)
    return doc
