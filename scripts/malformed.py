"""Generated requests, mostly malformed, for TF Serving's REST and gRPC APIs.

Shared by `fuzz_serve.py` and `soak_serve.py`. Everything is derived from the
signatures a server reports (GetModelMetadata), so a generator knows which
dtype and shape each input wants and can get exactly one thing wrong: the
dtype, a dimension, the number of values, a key, the JSON itself. A `Case` is
a finished request (an HTTP method, path and body, or a gRPC method and the
serialized request bytes), built from one `random.Random`, so a seed gives
the same requests every run.

gRPC requests are sent as bytes (`channel.unary_unary(method)` without a
serializer), which lets random and truncated bytes go out as well as protos
no client library would build. A ReloadConfig request is sent only when it is
certainly refused (bytes that do not parse as one, or a config that tfbig's
own check refuses): a well-formed one would change the models under test.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import string

import tfbig  # noqa: F401  (Keras 2 before TensorFlow loads)

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, input_pb2,
    model_management_pb2, predict_pb2, regression_pb2,
)
import tensorflow as tf

from tfbig.serving.config_files import ServeConfigError, check_models

PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
GRPC_METHODS = {  # method -> request type (the reply is parsed only for valid requests)
    PREDICTION_SERVICE + "Predict": predict_pb2.PredictRequest,
    PREDICTION_SERVICE + "Classify": classification_pb2.ClassificationRequest,
    PREDICTION_SERVICE + "Regress": regression_pb2.RegressionRequest,
    PREDICTION_SERVICE + "MultiInference": inference_pb2.MultiInferenceRequest,
    PREDICTION_SERVICE + "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
    MODEL_SERVICE + "GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
}
REPLY_TYPES = {
    PREDICTION_SERVICE + "Predict": predict_pb2.PredictResponse,
    PREDICTION_SERVICE + "Classify": classification_pb2.ClassificationResponse,
    PREDICTION_SERVICE + "Regress": regression_pb2.RegressionResponse,
}
# Declared tensors bigger than this are "heavy": today's server may allocate them in full, so the
# harness keeps at most one in flight and caps how many are sent (--max-huge).
HEAVY_BYTES = 64 << 20
HUGE_DIMS = (2**31, 2**40, 2**63 - 1, 2**32)
ODD_DTYPES = (types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE, 999, types_pb2.DT_INVALID,
              types_pb2.DT_FLOAT_REF, types_pb2.DT_QINT8, types_pb2.DT_COMPLEX64, types_pb2.DT_HALF,
              types_pb2.DT_BFLOAT16, types_pb2.DT_UINT64, types_pb2.DT_BOOL, types_pb2.DT_STRING, 25, 1000000)
ITEMSIZE = {types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_INT32: 4, types_pb2.DT_INT64: 8,
            types_pb2.DT_UINT8: 1, types_pb2.DT_INT8: 1, types_pb2.DT_INT16: 2, types_pb2.DT_BOOL: 1,
            types_pb2.DT_HALF: 2, types_pb2.DT_BFLOAT16: 2, types_pb2.DT_STRING: 8}


@dataclasses.dataclass(frozen=True)
class Signature:
    model: str
    name: str
    method: str  # "predict", "classify" or "regress"
    inputs: dict  # input name -> (dtype enum, dims or None for unknown rank; -1 = any size)
    outputs: tuple


@dataclasses.dataclass
class Case:
    protocol: str  # "rest" or "grpc"
    kind: str
    valid: bool = False
    heavy: bool = False
    http_method: str = "POST"
    path: str = ""
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)
    raw_http: bytes | None = None  # sent as is over a socket (a request http.client cannot write)
    rpc: str = ""
    payload: bytes = b""
    signature: Signature | None = None  # a valid Predict: whose outputs the answer must hold


def signatures_of(model: str, signature_map: get_model_metadata_pb2.SignatureDefMap) -> list[Signature]:
    """The model's signatures as the generators need them (from a GetModelMetadata reply)."""
    found = []
    for name, signature in sorted(signature_map.signature_def.items()):
        if not signature.inputs:  # __saved_model_init_op
            continue
        inputs = {key: (info.dtype, None if info.tensor_shape.unknown_rank
                        else tuple(d.size for d in info.tensor_shape.dim))
                  for key, info in signature.inputs.items()}
        method = signature.method_name.rsplit("/", 1)[-1] or "predict"
        found.append(Signature(model, name, method, inputs, tuple(sorted(signature.outputs))))
    return found


class Generator:
    """Cases for `signatures`. `example_features` names the tf.Example features a
    classify/regress signature parses ({feature: ("float"|"int64"|"bytes", length)});
    `valid_spec(model)` gives (version, label) for valid requests (default: latest)."""

    def __init__(self, signatures: list[Signature], rng: random.Random, *,
                 example_features: dict | None = None, valid_spec=None):
        self.rng = rng
        self.np_rng = np.random.default_rng(rng.getrandbits(64))
        self.predict = [s for s in signatures if s.method == "predict"]
        self.examples = [s for s in signatures if s.method in ("classify", "regress")]
        self.models = sorted({s.model for s in signatures})
        self.example_features = example_features or {}
        self.valid_spec = valid_spec or (lambda model: (None, None))

    # --- choosing ----------------------------------------------------------------------------

    def case(self, protocol: str, *, valid_fraction: float = 0.1, allow_heavy: bool = True) -> Case:
        """One request: valid with probability `valid_fraction`, else one malformed kind."""
        if self.rng.random() < valid_fraction:
            return self.valid(protocol)
        kinds = REST_KINDS if protocol == "rest" else GRPC_KINDS
        while True:
            kind, make = self.rng.choice(kinds)
            case = make(self)
            if case is None or (case.heavy and not allow_heavy):
                continue
            case.protocol, case.kind = protocol, case.kind or kind
            return case

    def valid(self, protocol: str) -> Case:
        choices = ["predict"] * 4 + (["examples"] if self.examples and self.example_features else [])
        kind = self.rng.choice(choices)
        if protocol == "rest":
            case = self.rest_valid_predict() if kind == "predict" else self.rest_valid_examples()
        else:
            case = self.grpc_valid_predict() if kind == "predict" else self.grpc_valid_examples()
        case.protocol, case.valid = protocol, True
        return case

    def pick(self, items):
        return self.rng.choice(list(items))

    # --- values ------------------------------------------------------------------------------

    def shape_for(self, dims, batch: int) -> tuple:
        if dims is None:
            return (batch,)
        return tuple((batch if i == 0 else self.rng.randint(1, 4)) if d < 0 else d for i, d in enumerate(dims))

    def array_for(self, dtype: int, shape) -> np.ndarray:
        if dtype == types_pb2.DT_STRING:
            flat = [self.word().encode() for _ in range(int(np.prod(shape)))]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(shape)
        numpy = np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
        if numpy.kind == "f":
            return self.np_rng.random(shape).astype(numpy)
        if numpy.kind == "b":
            return self.np_rng.random(shape) < 0.5
        return self.np_rng.integers(0, 10, shape).astype(numpy)

    def valid_inputs(self, signature: Signature, batch: int | None = None) -> dict:
        batch = batch or self.rng.randint(1, 3)
        shapes = {name: self.shape_for(dims, batch) for name, (_, dims) in signature.inputs.items()}
        return {name: self.array_for(dtype, shapes[name]) for name, (dtype, _) in signature.inputs.items()}

    def word(self) -> str:
        return "".join(self.rng.choice(string.ascii_letters) for _ in range(self.rng.randint(0, 8)))

    def junk_value(self):
        """A JSON value of the wrong kind for most inputs."""
        return self.pick(["abc", "", True, False, None, {}, {"a": 1}, [], {"b64": "AAAA"},
                          {"b64": 5}, 1.5, 7, -1, "1.0", "NaN", [[]], {"b64": "!!"}])

    def examples_json(self, count: int) -> list:
        examples = []
        for _ in range(count):
            example = {}
            for name, (kind, length) in self.example_features.items():
                if kind == "float":
                    example[name] = [round(self.rng.random(), 4) for _ in range(length)]
                elif kind == "int64":
                    example[name] = [self.rng.randint(0, 9) for _ in range(length)]
                else:
                    example[name] = [self.word() for _ in range(length)]
            examples.append(example)
        return examples

    def examples_proto(self, count: int) -> input_pb2.Input:
        request_input = input_pb2.Input()
        for values in self.examples_json(count):
            example = request_input.example_list.examples.add()
            for name, feature_values in values.items():
                kind = self.example_features[name][0]
                feature = example.features.feature[name]
                if kind == "float":
                    feature.float_list.value.extend(feature_values)
                elif kind == "int64":
                    feature.int64_list.value.extend(feature_values)
                else:
                    feature.bytes_list.value.extend(v.encode() for v in feature_values)
        return request_input

    # --- REST --------------------------------------------------------------------------------

    def rest_path(self, model: str, api: str = "predict", version=None, label=None) -> str:
        where = f"/versions/{version}" if version is not None else f"/labels/{label}" if label else ""
        return f"/v1/models/{model}{where}:{api}"

    def valid_rest_path(self, model: str, api: str) -> str:
        version, label = self.valid_spec(model)
        return self.rest_path(model, api, version, label)

    def rest_json(self, doc, model: str, api: str = "predict", **path) -> Case:
        path = self.rest_path(model, api, **path) if path else self.rest_path(model, api)
        return Case("rest", "", path=path, body=json.dumps(doc, allow_nan=True).encode())

    def instances_doc(self, signature: Signature, inputs: dict):
        rows = []
        for i in range(len(next(iter(inputs.values())))):
            if len(inputs) == 1:
                rows.append(_to_json(next(iter(inputs.values()))[i], self.rng))
            else:
                rows.append({name: _to_json(value[i], self.rng) for name, value in inputs.items()})
        doc = {"instances": rows}
        if signature.name != "serving_default" or self.rng.random() < 0.2:
            doc["signature_name"] = signature.name
        return doc

    def inputs_doc(self, signature: Signature, inputs: dict):
        if len(inputs) == 1 and self.rng.random() < 0.5:
            value = _to_json(next(iter(inputs.values())), self.rng)
        else:
            value = {name: _to_json(array, self.rng) for name, array in inputs.items()}
        doc = {"inputs": value}
        if signature.name != "serving_default":
            doc["signature_name"] = signature.name
        return doc

    def rest_valid_predict(self) -> Case:
        signature = self.pick(self.predict)
        inputs = self.valid_inputs(signature)
        doc = (self.instances_doc if self.rng.random() < 0.6 else self.inputs_doc)(signature, inputs)
        return Case("rest", "valid_predict", path=self.valid_rest_path(signature.model, "predict"),
                    body=json.dumps(doc).encode(), signature=signature)

    def rest_valid_examples(self) -> Case:
        signature = self.pick(self.examples)
        doc = {"signature_name": signature.name, "examples": self.examples_json(self.rng.randint(1, 3))}
        return Case("rest", f"valid_{signature.method}", path=self.valid_rest_path(signature.model, signature.method),
                    body=json.dumps(doc).encode())

    def rest_predict_doc(self):
        """(signature, a valid predict document) to break."""
        signature = self.pick(self.predict)
        inputs = self.valid_inputs(signature)
        return signature, (self.instances_doc if self.rng.random() < 0.6 else self.inputs_doc)(signature, inputs)

    # --- gRPC --------------------------------------------------------------------------------

    def spec(self, message, model: str, signature: str = "", valid: bool = False):
        message.model_spec.name = model
        if signature and (signature != "serving_default" or self.rng.random() < 0.3):
            message.model_spec.signature_name = signature
        if valid:
            version, label = self.valid_spec(model)
            if version is not None:
                message.model_spec.version.value = version
            elif label:
                message.model_spec.version_label = label
        return message

    def tensor(self, array: np.ndarray) -> tensor_pb2.TensorProto:
        if array.dtype.kind != "O" and self.rng.random() < 0.7:
            proto = tensor_pb2.TensorProto(dtype=tf.dtypes.as_dtype(array.dtype).as_datatype_enum,
                                           tensor_content=np.ascontiguousarray(array).tobytes())
            for size in array.shape:
                proto.tensor_shape.dim.add(size=size)
            return proto
        return tf.make_tensor_proto(array)

    def predict_request(self, signature: Signature, valid: bool = False) -> predict_pb2.PredictRequest:
        request = self.spec(predict_pb2.PredictRequest(), signature.model, signature.name, valid)
        for name, array in self.valid_inputs(signature).items():
            request.inputs[name].CopyFrom(self.tensor(array))
        return request

    def grpc_valid_predict(self) -> Case:
        signature = self.pick(self.predict)
        return Case("grpc", "valid_predict", rpc=PREDICTION_SERVICE + "Predict",
                    payload=self.predict_request(signature, valid=True).SerializeToString(), signature=signature)

    def grpc_valid_examples(self) -> Case:
        signature = self.pick(self.examples)
        if signature.method == "classify":
            request = classification_pb2.ClassificationRequest()
        else:
            request = regression_pb2.RegressionRequest()
        self.spec(request, signature.model, signature.name, valid=True)
        request.model_spec.signature_name = signature.name
        request.input.CopyFrom(self.examples_proto(self.rng.randint(1, 3)))
        return Case("grpc", f"valid_{signature.method}", rpc=PREDICTION_SERVICE + signature.method.capitalize(),
                    payload=request.SerializeToString())

    def predict_with(self, signature: Signature, name: str, proto: tensor_pb2.TensorProto, **kw) -> Case:
        """A Predict request for `signature` whose input `name` is `proto` (others valid)."""
        request = self.predict_request(signature)
        request.inputs[name].CopyFrom(proto)
        return Case("grpc", "", rpc=PREDICTION_SERVICE + "Predict", payload=request.SerializeToString(), **kw)

    def some_input(self):
        signature = self.pick(self.predict)
        name = self.pick(sorted(signature.inputs))
        dtype, dims = signature.inputs[name]
        return signature, name, dtype, dims


def _to_json(array, rng: random.Random):
    """An array as JSON-able lists: floats, ints, bools, strings (bytes as text or {"b64": ...})."""
    if not isinstance(array, bytes):
        array = np.asarray(array)
        if array.dtype.kind not in "OS":
            return array.tolist()
        array = array.tolist()
    as_b64 = rng.random() < 0.3

    def convert(value):
        if isinstance(value, list):
            return [convert(item) for item in value]
        return {"b64": base64.b64encode(value).decode()} if as_b64 else value.decode("utf-8")

    return convert(array)


def _replace_leaf(doc, value, rng: random.Random):
    """`doc` with one number/string inside replaced by `value` (in place; returns doc)."""
    path, node = [], doc
    while True:
        if isinstance(node, dict) and node and not ("b64" in node and len(node) == 1):
            key = rng.choice(sorted(node))
        elif isinstance(node, list) and node:
            key = rng.randrange(len(node))
        else:
            break
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        parent[key] = value
    return doc


# --- REST kinds -----------------------------------------------------------------------------------

def rest_wrong_type(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    return g.rest_json(_replace_leaf(doc, g.junk_value(), g.rng), signature.model)


def rest_huge_number(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    token = g.pick(["1e400", "-1e400", str(2**64), str(2**63), str(-2**63 - 1), "1e39", "-3.5e38",
                    "1" * 400, "123456789012345678901234567890.5", str(2**31), str(-2**31 - 1), "1e-400",
                    "0.0000000000000000000000000000000000000000000001"])
    text = json.dumps(_replace_leaf(doc, "@@", g.rng)).replace('"@@"', token)
    return Case("rest", "", path=g.rest_path(signature.model), body=text.encode())


def rest_nan_token(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    token = g.pick(["NaN", "Infinity", "-Infinity", "nan", "inf", "-inf", "+Infinity", "Nan", "NAN", "+1"])
    text = json.dumps(_replace_leaf(doc, "@@", g.rng)).replace('"@@"', token)
    return Case("rest", "", path=g.rest_path(signature.model), body=text.encode())


def rest_deep_nesting(g: Generator) -> Case:
    signature = g.pick(g.predict)
    depth = g.pick([100, 1000, 5000, 100000])
    opener, closer = g.pick([("[", "]"), ('{"a":', "}"), ('[{"b64":', "}]")])
    inner = opener * depth + g.pick(["1.0", "", '"x"']) + (closer * depth if g.rng.random() < 0.5 else "")
    body = g.pick([inner, '{"instances": ' + inner + "}", '{"inputs": ' + inner + "}",
                   '{"instances": [' + inner + "]}", '{"examples": [' + inner + "]}"])
    api = "classify" if '"examples"' in body else "predict"
    return Case("rest", f"rest_deep_nesting_{depth}", path=g.rest_path(signature.model, api), body=body.encode())


def rest_many_dims(g: Generator) -> Case:
    """Valid JSON whose values are nested far deeper than the signature's rank."""
    signature, doc = g.rest_predict_doc()
    value = 1.0
    for _ in range(g.rng.randint(5, 64)):
        value = [value]
    return g.rest_json(_replace_leaf(doc, value, g.rng) if g.rng.random() < 0.5 else {"instances": [value]},
                       signature.model)


def rest_ragged(g: Generator) -> Case:
    signature = g.pick(g.predict)
    rows = [g.valid_inputs(signature, 1) for _ in range(g.rng.randint(2, 4))]
    name = g.pick(sorted(signature.inputs))
    dtype, dims = signature.inputs[name]
    other = g.shape_for(dims, 1)
    other = tuple(s + g.pick([-1, 1, 2]) if i else s for i, s in enumerate(other)) or (2,)
    rows[-1][name] = g.array_for(dtype, tuple(max(0, s) for s in other))
    doc = {"instances": [({k: _to_json(v[0] if v.ndim else v, g.rng) for k, v in r.items()}
                          if len(r) > 1 else _to_json(next(iter(r.values()))[0], g.rng)) for r in rows]}
    if g.rng.random() < 0.3:  # a ragged list inside one instance
        doc = {"instances": [[[1.0, 2.0], [3.0]]]}
    if signature.name != "serving_default":
        doc["signature_name"] = signature.name
    return g.rest_json(doc, signature.model)


def rest_wrong_shape(g: Generator) -> Case:
    signature = g.pick(g.predict)
    inputs = g.valid_inputs(signature)
    name = g.pick(sorted(inputs))
    dtype, _ = signature.inputs[name]
    shape = list(inputs[name].shape)
    if len(shape) > 1 and g.rng.random() < 0.5:
        shape[g.rng.randrange(1, len(shape))] += g.pick([-1, 1, 5])
    elif g.rng.random() < 0.5:
        shape = shape + [2]
    else:
        shape = shape[:-1] or [1]
    inputs[name] = g.array_for(dtype, tuple(max(s, 0) for s in shape))
    return g.rest_json(g.inputs_doc(signature, inputs) | ({"signature_name": signature.name}), signature.model)


def rest_wrong_keys(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    key = g.pick(["instances", "inputs"])
    names = sorted(signature.inputs)
    row = {n: 1.0 for n in g.rng.sample(names, g.rng.randint(0, len(names)))}
    row[g.pick(["x", "", "inputs", "signature_name", "b64", "\u00e9"])] = [1.0]
    variants = [{key: [row]}, {key: row}, {"instance": doc.get("instances", [])}, {"Instances": [1.0]},
                {"inputs": {}}, {key: [row, 1.0]}, {key: [1.0, row]}, {**doc, "extra": 1}]
    return g.rest_json(g.pick(variants) | {"signature_name": signature.name}, signature.model)


def rest_bad_structure(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    value = next(iter(doc.values()))
    variants = [{"instances": 1.0}, {"instances": []}, {"instances": {}}, {"instances": None},
                {"instances": "x"}, {"instances": [[]]}, {"inputs": []}, {"inputs": None}, {"inputs": {}},
                {"instances": value, "inputs": value}, {}, {"signature_name": 5}, {"signature_name": None},
                {"signature_name": ["serving_default"]}, {"instances": [[], []]}, {"inputs": [[[]]]},
                {"instances": [None]}, {"inputs": {"b64": "AAAA"}}, {"instances": [{}]}]
    return g.rest_json(g.pick(variants), signature.model)


def rest_not_json(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    text = json.dumps(doc).encode()
    bodies = [bytes(g.rng.getrandbits(8) for _ in range(g.rng.randint(1, 200))), b"", b"   ", b"null",
              b"[]", b"1", b'"x"', b"true", text[:g.rng.randint(1, max(1, len(text) - 1))], text + b"}",
              text + b" junk", b"\xef\xbb\xbf" + text, b"{'instances': [1]}", b'{"instances": [1,]}',
              b'{"instances" [1]}', b"{" * 3, text.replace(b'"', b"'"), b'{"instances": [1] /* c */}',
              b'{"a":1,"a":2}', b"\x00" * 10, text.replace(b":", b"=", 1)]
    return Case("rest", "", path=g.rest_path(signature.model), body=g.pick(bodies))


def rest_non_utf8(g: Generator) -> Case:
    signature = g.pick(g.predict)
    bodies = [b'{"instances": ["\xff\xfe"]}', b'{"\xff": [1.0]}', b'{"instances": [1.0], "signature_name": "\xc3"}',
              '{"instances": [1.0]}'.encode("utf-16"), '{"instances": ["\u00e9"]}'.encode("latin-1"),
              b'{"inputs": {"\xed\xa0\x80": 1}}', b'{"instances": ["\\ud800"]}', b'{"instances": ["\\u0000"]}',
              b'{"signature_name": "\\ud83d"}']
    return Case("rest", "", path=g.rest_path(signature.model), body=g.pick(bodies))


def rest_b64(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    value = g.pick([{"b64": "AAAA"}, {"b64": "!!!!"}, {"b64": ""}, {"b64": "A"}, {"b64": 1}, {"b64": None},
                    {"b64": ["AAAA"]}, {"b64": "AAAA", "x": 1}, {"B64": "AAAA"}, {"b64": "=" * 9},
                    {"b64": base64.b64encode(bytes(range(256))).decode()}])
    return g.rest_json(_replace_leaf(doc, value, g.rng), signature.model)


def rest_headers(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    headers = g.pick([{"Content-Type": "text/plain"}, {"Content-Type": "multipart/form-data; boundary=x"},
                      {"Content-Encoding": "gzip"}, {"Content-Encoding": "deflate"}, {"Content-Encoding": "br"},
                      {"Content-Type": "application/json; charset=latin-1"}, {"Expect": "100-continue"},
                      {"Content-Encoding": "identity, gzip"}, {"Transfer-Encoding": "gzip"}])
    case = g.rest_json(doc, signature.model)
    case.headers = headers
    return case


def rest_raw_http(g: Generator) -> Case:
    """Requests http.client refuses to write: bad request lines, lengths and encodings."""
    model = g.pick(g.models)
    body = b'{"instances": [1.0]}'
    raw = g.pick([
        b"POST /v1/models/\xff:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n%s" % (model.encode(), body),
        b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n%s" % (model.encode(), body),
        b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
        % model.encode(),
        b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        % model.encode(),
        b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
        b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nX: " % model.encode() + b"a" * 20000 + b"\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ])
    return Case("rest", "", raw_http=raw)


def rest_method_path(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    model = signature.model
    body = json.dumps(doc).encode()
    method, path = g.pick([
        (g.pick(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"]), g.rest_path(model)),
        ("POST", f"/v1/models/{model}"), ("POST", f"/v1/models/{model}/metadata"), ("PUT", f"/v1/models/{model}"),
        ("POST", f"/v1/models/{model}:explain"), ("POST", f"/v1/models/{model}:"), ("POST", "/v1/models/:predict"),
        ("POST", "/v1/models//versions/1:predict"), ("POST", f"/v1/models/{model}/versions/:predict"),
        ("POST", f"/v1/models/{model}/versions/abc:predict"), ("POST", f"/v1/models/{model}/versions/-1:predict"),
        ("POST", f"/v1/models/{model}/versions/{'9' * 30}:predict"), ("POST", f"/v1/models/{model}/labels/:predict"),
        ("POST", f"/v1/models/{model}/versions/1/labels/x:predict"), ("POST", "/v2/models/x:predict"),
        ("POST", "/v1/"), ("GET", "/v1/models/" + "a" * 5000), ("POST", f"/v1/models/{model}%2F..%2Fx:predict"),
        ("POST", "/v1/models/%ff%fe:predict"), ("POST", f"/v1/models/{model}:predict?x=1&&="),
        ("GET", f"/v1/models/{model}/versions/0/metadata"), ("GET", "/v1/models/%00"), ("GET", "/v1/models/%"),
        ("POST", f"/V1/MODELS/{model.upper()}:PREDICT"), ("GET", f"/v1/models/{model}/labels/%25/metadata"),
        ("POST", f"/v1/models/{model}/versions/{2**63}:predict"), ("GET", "/healthz/../v1/models"),
    ])
    return Case("rest", "", http_method=method, path=path, body=body if method not in ("GET", "HEAD") else b"")


def rest_unknown(g: Generator) -> Case:
    signature, doc = g.rest_predict_doc()
    choice = g.rng.randrange(5)
    if choice == 0:
        return g.rest_json(doc, "no_such_model")
    if choice == 1:
        return g.rest_json(doc, signature.model, version=999999)
    if choice == 2:
        return g.rest_json(doc, signature.model, label=g.pick(["nolabel", "stable2", "x" * 300]))
    if choice == 3:
        return g.rest_json(doc | {"signature_name": g.pick(["nosig", "", " ", "serving_default\x00"])},
                           signature.model)
    # a predict body to another signature kind, or classify/regress on a model without one
    other = g.pick([s for s in g.examples + g.predict if s.name != signature.name] or [signature])
    return g.rest_json(doc | {"signature_name": other.name}, signature.model)


def rest_bad_examples(g: Generator) -> Case:
    if not g.examples:
        return None
    signature = g.pick(g.examples)
    good = g.examples_json(2) if g.example_features else [{"x": [1.0]}]
    feature = g.pick(sorted(good[0]))
    bad_feature = g.pick([[[1.0]], None, {"a": 1}, [1, "a"], [1.0, 2], [2**64], [-2**63 - 1], [], "x",
                          [{"b64": "!!"}], [{"b64": 3}], [True], [1.0] * 3, [1.0] * 1000])
    examples = g.pick([
        [dict(good[0], **{feature: bad_feature})], [], "x", {"a": 1}, [None], [[1.0]], [1.0], [{}],
        [{"no_such_feature": [1.0]}], good + [5], [{feature: [float("nan")]}],
    ])
    doc = {"signature_name": signature.name, "examples": examples}
    if g.rng.random() < 0.3:
        doc["context"] = g.pick([None, [], "x", {feature: [[1]]}, {"c": [1, "a"]}, good[0]])
    if g.rng.random() < 0.1:
        doc = {"signature_name": signature.name, "instances": [1.0]}
    api = g.pick(["classify", "regress"])
    model = g.pick(g.models)  # sometimes a model with no such signature
    return Case("rest", "", path=g.rest_path(model, api), body=json.dumps(doc, allow_nan=True).encode())


def rest_big_body(g: Generator) -> Case:
    """Many values (today's server held about 470x the body's bytes while decoding)."""
    signature = g.pick(g.predict)
    count = g.pick([250_000, 1_000_000])
    return Case("rest", f"rest_big_body_{count}", heavy=True, path=g.rest_path(signature.model),
                body=b'{"instances": [' + b",".join([b"1.0"] * count) + b"]}")


def rest_int_range(g: Generator) -> Case:
    ints = [s for s in g.predict if any(d in (types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_UINT8,
                                              types_pb2.DT_INT8) for d, _ in s.inputs.values())]
    if not ints:
        return None
    signature = g.pick(ints)
    inputs = g.valid_inputs(signature)
    doc = g.inputs_doc(signature, inputs)
    token = g.pick([str(2**31), str(-2**31 - 1), str(2**63), str(2**64), "1.5", "1e3", "-0.0", "256", "-1"])
    text = json.dumps(_replace_leaf(doc, "@@", g.rng)).replace('"@@"', token)
    return Case("rest", "", path=g.rest_path(signature.model), body=text.encode())


REST_KINDS = [(f.__name__, f) for f in (
    rest_wrong_type, rest_huge_number, rest_nan_token, rest_deep_nesting, rest_many_dims, rest_ragged,
    rest_wrong_shape, rest_wrong_keys, rest_bad_structure, rest_not_json, rest_non_utf8, rest_b64, rest_headers,
    rest_raw_http, rest_method_path, rest_unknown, rest_bad_examples, rest_big_body, rest_int_range)]


# --- gRPC kinds -----------------------------------------------------------------------------------

def _proto(dtype, dims, **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(**fields)
    proto.dtype = dtype
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _fill(proto: tensor_pb2.TensorProto, dtype: int, count: int, rng: random.Random) -> None:
    """`count` values in the typed field a dtype uses (float_val for DT_FLOAT, ...)."""
    if dtype in (types_pb2.DT_FLOAT,):
        proto.float_val.extend(rng.random() for _ in range(count))
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(rng.random() for _ in range(count))
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(rng.randint(0, 9) for _ in range(count))
    elif dtype == types_pb2.DT_STRING:
        proto.string_val.extend(b"s" for _ in range(count))
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(True for _ in range(count))
    elif dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        proto.half_val.extend(15360 for _ in range(count))
    else:
        proto.int_val.extend(rng.randint(0, 9) for _ in range(count))


def _zeros_or_values(proto, dtype: int, count: int, rng) -> None:
    """Half the time `count` zeros as tensor_content (strings have none), else typed values."""
    if dtype != types_pb2.DT_STRING and rng.random() < 0.5:
        proto.tensor_content = bytes(count * ITEMSIZE.get(dtype, 4))
    else:
        _fill(proto, dtype, count, rng)


def grpc_wrong_dtype(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    shape = g.shape_for(dims, 1)
    other = g.pick([d for d in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64,
                                types_pb2.DT_UINT8, types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF)
                    if d != dtype])
    proto = _proto(other, shape)
    count = int(np.prod(shape))
    _zeros_or_values(proto, other, count, g.rng)
    return g.predict_with(signature, name, proto)


def grpc_odd_dtype(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    shape = g.shape_for(dims, 1)
    odd = g.pick(ODD_DTYPES)
    proto = _proto(odd, shape)
    count = int(np.prod(shape))
    content = g.rng.randrange(4)
    if content == 0:
        proto.tensor_content = bytes(g.rng.getrandbits(8) for _ in range(count * g.pick([1, 2, 4, 8, 16])))
    elif content == 1:
        _fill(proto, g.pick([types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_STRING]), count, g.rng)
    elif content == 2:
        proto.variant_val.add(type_name="x", metadata=b"\x01")
        proto.resource_handle_val.add(device="/cpu:0", name="r")
    return g.predict_with(signature, name, proto)


def grpc_bad_dims(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    shape = list(g.shape_for(dims, 1))
    choice = g.rng.randrange(5)
    if choice == 0:
        shape[g.rng.randrange(len(shape))] = g.pick([-1, -5, -2**31, -2**63])
    elif choice == 1:
        shape[g.rng.randrange(len(shape))] = 0
    elif choice == 2:
        shape = [1] * g.pick([33, 64, 255, 300, 2000])
    elif choice == 3:
        shape = []
    else:
        shape = shape[:-1] + [1, shape[-1]]
    proto = _proto(dtype, shape)
    count = max(1, int(np.prod([max(s, 0) for s in shape] or [1])))
    _zeros_or_values(proto, dtype, count, g.rng)
    return g.predict_with(signature, name, proto)


def grpc_huge_dims(g: Generator) -> Case:
    """Declared sizes of 2**31 and more: with no values, one value (broadcast) or a little content."""
    signature, name, dtype, dims = g.some_input()
    shape = list(g.shape_for(dims, 1))
    huge = g.pick(HUGE_DIMS)
    shape[g.rng.randrange(len(shape))] = huge
    if g.rng.random() < 0.2:
        shape = [2**32, 2**32]  # the product overflows int64
    proto = _proto(g.pick([dtype, dtype, types_pb2.DT_FLOAT, types_pb2.DT_UINT8, types_pb2.DT_STRING]), shape)
    content = g.rng.randrange(3)
    if content == 0:
        proto.tensor_content = bytes(16)
    elif content == 1:
        _fill(proto, proto.dtype, 1, g.rng)
    # content == 2: no values at all
    declared = float(np.prod([float(s) for s in shape])) * ITEMSIZE.get(proto.dtype, 4)
    heavy = content != 0 and declared > HEAVY_BYTES
    case = g.predict_with(signature, name, proto, heavy=heavy)
    case.kind = f"grpc_huge_dims_{'content' if content == 0 else 'one_value' if content == 1 else 'no_values'}"
    return case


def grpc_content_length(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    if dtype == types_pb2.DT_STRING:
        dtype = types_pb2.DT_FLOAT
    shape = g.shape_for(dims, g.rng.randint(1, 3))
    size = int(np.prod(shape)) * ITEMSIZE.get(dtype, 4)
    length = g.pick([0 if size else 1, max(0, size - 1), size + 1, size * 2, 3, size + ITEMSIZE.get(dtype, 4)])
    if length == size:
        length += 1
    proto = _proto(dtype, shape, tensor_content=bytes(g.rng.getrandbits(8) for _ in range(min(length, 1 << 16))))
    return g.predict_with(signature, name, proto)


def grpc_value_count(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    shape = g.shape_for(dims, g.rng.randint(1, 3))
    count = int(np.prod(shape))
    proto = _proto(dtype, shape)
    _fill(proto, dtype, g.pick([c for c in (0, 2, count - 1, count + 1, count * 3) if c >= 0 and c not in (1, count)]
                               or [count + 1]), g.rng)
    return g.predict_with(signature, name, proto)


def grpc_wrong_field(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    shape = g.shape_for(dims, 1)
    count = int(np.prod(shape))
    proto = _proto(dtype, shape)
    field = g.pick(["float_val", "double_val", "int_val", "int64_val", "string_val", "bool_val", "half_val",
                    "scomplex_val", "uint32_val", "uint64_val"])
    values = {"float_val": [1.5] * count, "double_val": [1.5] * count, "int_val": [2**31 - 1] * count,
              "int64_val": [2**63 - 1] * count, "string_val": [b"\xff"] * count, "bool_val": [True] * count,
              "half_val": [65535] * count, "scomplex_val": [1.0, 2.0] * count, "uint32_val": [2**32 - 1] * count,
              "uint64_val": [2**64 - 1] * count}[field]
    getattr(proto, field).extend(values)
    if g.rng.random() < 0.3:  # two fields at once
        _fill(proto, dtype, count, g.rng)
    return g.predict_with(signature, name, proto)


def grpc_unknown_rank(g: Generator) -> Case:
    signature, name, dtype, dims = g.some_input()
    proto = _proto(dtype, g.pick([[], [1], [2, 3]]))
    proto.tensor_shape.unknown_rank = True
    _fill(proto, dtype, g.pick([0, 1, 6]), g.rng)
    return g.predict_with(signature, name, proto)


def grpc_inputs(g: Generator) -> Case:
    signature = g.pick(g.predict)
    request = g.predict_request(signature)
    choice = g.rng.randrange(4)
    if choice == 0:
        del request.inputs[g.pick(sorted(request.inputs))]
    elif choice == 1:
        request.inputs[g.pick(["extra", "", "\u00e9", "inputs ", "x" * 1000])].CopyFrom(
            _proto(types_pb2.DT_FLOAT, [1], float_val=[1.0]))
    elif choice == 2:
        request.inputs.clear()
    else:
        for key in list(request.inputs):
            request.inputs[key].Clear()  # an empty TensorProto: DT_INVALID, no shape
    return Case("grpc", "", rpc=PREDICTION_SERVICE + "Predict", payload=request.SerializeToString())


def grpc_spec(g: Generator) -> Case:
    signature = g.pick(g.predict)
    request = g.predict_request(signature)
    choice = g.rng.randrange(8)
    if choice == 0:
        request.ClearField("model_spec")
    elif choice == 1:
        request.model_spec.name = g.pick(["no_such_model", "", "\u00e9" * 10, "../x", "a" * 5000])
    elif choice == 2:
        request.model_spec.version.value = g.pick([999999, -1, 0, 2**63 - 1, -2**63])
    elif choice == 3:
        request.model_spec.version_label = g.pick(["nolabel", "", "STABLE", "\x00"])
    elif choice == 4:
        request.model_spec.signature_name = g.pick(["nosig", " ", "serving_default\x00", "\u00e9"])
    elif choice == 5:
        others = [s for s in g.examples + g.predict if s.model == signature.model and s.name != signature.name]
        if not others:
            return None
        request.model_spec.signature_name = g.pick(others).name
    elif choice == 6:
        request.model_spec.version.value = 1
        request.model_spec.version_label = "stable"  # both: a oneof keeps the last
    else:
        request.output_filter.extend(g.pick([["nope"], [""], [signature.outputs[0]] * 2,
                                             list(signature.outputs) + ["x"], ["\xff"]]))
    return Case("grpc", "", rpc=PREDICTION_SERVICE + "Predict", payload=request.SerializeToString())


def grpc_random_bytes(g: Generator) -> Case:
    method = g.pick(sorted(GRPC_METHODS))
    valid = g.predict_request(g.pick(g.predict)).SerializeToString()
    choice = g.rng.randrange(5)
    if choice == 0:
        payload = bytes(g.rng.getrandbits(8) for _ in range(g.rng.randint(0, 300)))
    elif choice == 1:
        payload = valid[:g.rng.randint(1, max(1, len(valid) - 1))]
    elif choice == 2:
        payload = valid + bytes(g.rng.getrandbits(8) for _ in range(g.rng.randint(1, 20)))
    elif choice == 3:  # flip bytes of a valid request
        data = bytearray(valid)
        for _ in range(g.rng.randint(1, 5)):
            data[g.rng.randrange(len(data))] = g.rng.getrandbits(8)
        payload = bytes(data)
    else:  # a valid request to another method (a PredictRequest parsed as a ClassificationRequest...)
        payload = valid
    return Case("grpc", f"grpc_random_bytes_{method.rsplit('/', 1)[-1]}", rpc=method, payload=payload)


def grpc_bad_examples(g: Generator) -> Case:
    signature = g.pick(g.examples) if g.examples else g.pick(g.predict)
    method = g.pick(["Classify", "Regress"])
    request = (classification_pb2.ClassificationRequest() if method == "Classify"
               else regression_pb2.RegressionRequest())
    g.spec(request, g.pick(g.models), signature.name)
    choice = g.rng.randrange(6)
    if choice == 0:
        pass  # no input at all
    elif choice == 1:
        request.input.example_list.SetInParent()  # an empty list
    elif choice == 2:
        example = request.input.example_list.examples.add()
        example.features.feature[g.pick(["nope", "inputs"])].int64_list.value.extend([2**63 - 1] * g.pick([1, 64, 65]))
    elif choice == 3:
        example = request.input.example_list.examples.add()
        example.features.feature["inputs"].bytes_list.value.extend([b"\xff" * 3] * g.pick([1, 64]))
    elif choice == 4:
        request.input.CopyFrom(g.examples_proto(2) if g.example_features else input_pb2.Input())
        request.input.example_list_with_context.context.features.feature["inputs"].float_list.value.extend([1.0] * 7)
    else:
        request.input.CopyFrom(g.examples_proto(1) if g.example_features else input_pb2.Input())
        feature = next(iter(request.input.example_list.examples[0].features.feature.values()), None) \
            if request.input.example_list.examples else None
        if feature is not None:
            feature.float_list.value.extend([1.0] * g.pick([1, 100]))  # the wrong length
    return Case("grpc", "", rpc=PREDICTION_SERVICE + method, payload=request.SerializeToString())


def grpc_multi_inference(g: Generator) -> Case:
    request = inference_pb2.MultiInferenceRequest()
    for _ in range(g.rng.randint(0, 3)):
        task = request.tasks.add()
        task.model_spec.name = g.pick(g.models + ["no_such_model"])
        task.model_spec.signature_name = g.pick([s.name for s in g.examples + g.predict])
        task.method_name = g.pick(["tensorflow/serving/classify", "tensorflow/serving/regress",
                                   "tensorflow/serving/predict", "", "x"])
    if g.example_features and g.rng.random() < 0.7:
        request.input.CopyFrom(g.examples_proto(g.rng.randint(1, 2)))
    return Case("grpc", "", rpc=PREDICTION_SERVICE + "MultiInference", payload=request.SerializeToString())


def grpc_metadata_status(g: Generator) -> Case:
    if g.rng.random() < 0.5:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = g.pick(g.models + ["no_such_model", ""])
        request.metadata_field.extend(g.pick([[], ["signature_def"] * 2, ["x"], [""], ["signature_def", "y"]]))
        if g.rng.random() < 0.3:
            request.model_spec.version.value = g.pick([0, -1, 999999])
        return Case("grpc", "", rpc=PREDICTION_SERVICE + "GetModelMetadata", payload=request.SerializeToString())
    request = get_model_status_pb2.GetModelStatusRequest()
    choice = g.rng.randrange(4)
    if choice:
        request.model_spec.name = g.pick(g.models + ["no_such_model", ""])
    if choice == 2:
        request.model_spec.version.value = g.pick([0, -1, 999999, 2**63 - 1])
    if choice == 3:
        request.model_spec.version_label = "nolabel"
    return Case("grpc", "", rpc=MODEL_SERVICE + "GetModelStatus", payload=request.SerializeToString())


def grpc_unknown_method(g: Generator) -> Case:
    return Case("grpc", "", rpc=g.pick([PREDICTION_SERVICE + "Nope", "/tensorflow.serving.Nope/Predict",
                                        "/x/y", MODEL_SERVICE + "Predict"]), payload=b"")


def grpc_strings(g: Generator) -> Case:
    """String tensors: bytes that are not UTF-8, tensor_content for strings, many of them."""
    signature, name, dtype, dims = g.some_input()
    shape = g.shape_for(dims, 1)
    count = int(np.prod(shape))
    proto = _proto(types_pb2.DT_STRING, shape)
    choice = g.rng.randrange(3)
    if choice == 0:
        proto.string_val.extend([bytes([g.rng.getrandbits(8)]) * g.rng.randint(0, 50) for _ in range(count)])
    elif choice == 1:
        proto.tensor_content = bytes(8 * count)
    else:
        proto.string_val.extend([b"x" * 1000] * (count + 5))
    return g.predict_with(signature, name, proto)


def grpc_many_values(g: Generator) -> Case:
    """A few MB of values for a declared shape of that size (allowed work, but much of it)."""
    signature, name, dtype, dims = g.some_input()
    count = g.pick([1_000_000, 250_000])
    proto = _proto(types_pb2.DT_FLOAT if dtype == types_pb2.DT_STRING else dtype, [count] + [1] * 0)
    proto.tensor_content = bytes(count * ITEMSIZE.get(proto.dtype, 4))
    case = g.predict_with(signature, name, proto, heavy=True)
    case.kind = f"grpc_many_values_{count}"
    return case


def grpc_reload_config(g: Generator) -> Case | None:
    """A ReloadConfig that must be refused, the models served staying as they were: bytes that
    are not a ReloadConfigRequest, no config or a custom one, or a model list with one thing
    wrong (a bad or repeated name, no base path, another platform, a bad logging_config)."""
    request = model_management_pb2.ReloadConfigRequest()
    choice = g.rng.randrange(4)
    if choice == 0:
        payload = bytes(g.rng.getrandbits(8) for _ in range(g.rng.randint(1, 200)))
        try:
            model_management_pb2.ReloadConfigRequest.FromString(payload)
            return None  # it parses: what it would do is not known to be a refusal
        except DecodeError:
            return Case("grpc", "grpc_reload_config_bytes", rpc=MODEL_SERVICE + "HandleReloadConfigRequest",
                        payload=payload)
    if choice == 1:
        if g.rng.random() < 0.5:
            request.config.custom_model_config.type_url = "type.googleapis.com/x.Y"
    else:
        models = request.config.model_config_list.config
        for name in g.models:
            models.add(name=name, base_path=f"/nonexistent/{name}", model_platform="tensorflow")
        model = models[g.rng.randrange(len(models))]
        wrong = g.rng.randrange(6)
        if wrong == 0:
            model.name = g.pick(["", "a/b", "..", "x" * 5000, "nul\x00", "../etc", " "])
        elif wrong == 1:
            models.add().CopyFrom(model)
        elif wrong == 2:
            model.base_path = ""
        elif wrong == 3:
            model.model_platform = g.pick(["pytorch", "TENSORFLOW", "tensorflow "])
        elif wrong == 4:
            model.logging_config.sampling_config.sampling_rate = g.pick([1.5, -0.1, float("nan"), 1e300])
        else:
            model.logging_config.log_collector_config.type = g.pick(["kafka", "x" * 300])
    try:
        check_models(request.config)
    except ServeConfigError:
        return Case("grpc", "grpc_reload_config", rpc=MODEL_SERVICE + "HandleReloadConfigRequest",
                    payload=request.SerializeToString())
    if request.config.WhichOneof("config") != "model_config_list":
        return Case("grpc", "grpc_reload_config", rpc=MODEL_SERVICE + "HandleReloadConfigRequest",
                    payload=request.SerializeToString())
    return None  # accepted by the check: it would change what is served


GRPC_KINDS = [(f.__name__, f) for f in (
    grpc_wrong_dtype, grpc_odd_dtype, grpc_bad_dims, grpc_huge_dims, grpc_content_length, grpc_value_count,
    grpc_wrong_field, grpc_unknown_rank, grpc_inputs, grpc_spec, grpc_random_bytes, grpc_bad_examples,
    grpc_multi_inference, grpc_metadata_status, grpc_unknown_method, grpc_strings, grpc_many_values,
    grpc_reload_config)]
