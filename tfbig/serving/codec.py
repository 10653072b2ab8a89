"""Tensors and examples in TF Serving's wire formats: TensorProto and REST JSON.

Shared by the client and the embedded server so that both sides agree on
every rule, and both follow TF Serving's util/json_tensor.cc: row (`instances`)
and columnar (`inputs`) requests, `{"b64": ...}` for binary strings, string
outputs written as base64 only when the output's name ends in `_bytes`, and
JSON examples whose integers become int64 features and decimals float ones.
"""

from __future__ import annotations

import base64
import functools
import json
import math

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfbig.serving.errors import invalid_argument

B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# The most dimensions a decoded tensor may have: numpy's own limit (TensorFlow's is 254).
MAX_RANK = 64


# --- TensorProto ------------------------------------------------------------

# The dtype lookups are cached: tf.dtypes.as_dtype costs microseconds, and
# every request and reply makes several of them.
@functools.cache
def _dtype_enum(dtype: np.dtype) -> int:
    return tf.dtypes.as_dtype(dtype).as_datatype_enum


@functools.cache
def numpy_dtype(dtype_enum: int) -> np.dtype:
    """The numpy dtype of a TF DataType enum (strings are object arrays of bytes)."""
    if dtype_enum == types_pb2.DT_STRING:
        return np.dtype(object)
    return np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)


@functools.cache
def dtype_name(dtype_enum: int) -> str:
    return tf.dtypes.as_dtype(dtype_enum).name


def type_string(dtype_enum: int) -> str:
    """A DataType as TensorFlow's DataTypeString writes it in TF Serving's messages: float, double, int32."""
    return types_pb2.DataType.Name(dtype_enum).removeprefix("DT_").lower()


def to_tensor_proto(value, out: tensor_pb2.TensorProto | None = None) -> tensor_pb2.TensorProto:
    """Numbers go straight into `tensor_content` (what TF Serving itself sends): a few
    microseconds instead of tf.make_tensor_proto's tens, on every request and reply.
    Written into `out` when given (a request's or reply's map entry: no copy to make)."""
    proto = tensor_pb2.TensorProto() if out is None else out
    array = np.asarray(value)
    if array.dtype.kind == "U":
        array = np.char.encode(array, "utf-8")
    if array.dtype.kind not in "biuf" or array.dtype.str[0] == ">":
        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = _dtype_enum(array.dtype)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def from_tensor_proto(proto) -> np.ndarray:
    if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
        dtype = numpy_dtype(proto.dtype)
        shape = [d.size for d in proto.tensor_shape.dim]
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape).copy()  # writable, like make_ndarray
    return tf.make_ndarray(proto)


# --- JSON values -> numpy ---------------------------------------------------

def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _decode_b64(value) -> bytes:
    # As TF Serving's decoder (absl::Base64Unescape): whitespace is skipped and padding optional.
    text = "".join(value[B64_KEY].split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise invalid_argument("Unable to base64 decode") from None


def json_shape(value) -> tuple[int, ...]:
    """The shape of nested JSON lists, read down their first elements (`_flatten` checks
    the rest); refused past MAX_RANK, before anything recurses that deep."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_RANK:
            raise invalid_argument(f"JSON arrays are nested more than {MAX_RANK} deep; "
                                   f"a tensor has at most {MAX_RANK} dimensions")
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _flatten(value, shape: tuple[int, ...], level: int, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {_value_text(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}")
        out.append(value)
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}")
    if level == len(shape) - 1 and list not in set(map(type, value)):
        out.extend(value)  # the innermost lists hold the leaves: no call per leaf
        return
    for item in value:
        _flatten(item, shape, level + 1, out)


def _json_type(value) -> str:
    """The JSON type names of TF Serving's messages (rapidjson's)."""
    if value is None or isinstance(value, bool):
        return str(value).replace("None", "Null")
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _value_text(value) -> str:
    """A JSON value for an error message: short, and safe however deeply it nests."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested past orjson's writer limit, or NaN
        text = "[...]" if isinstance(value, list) else "{...}" if isinstance(value, dict) else repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _type_error(value, dtype_enum: int):
    return invalid_argument(f"JSON Value: {_value_text(value)} Type: {_json_type(value)} "
                            f"is not of expected type: {type_string(dtype_enum)}")


def _leaf(value, dtype_enum: int, kind: str):
    if kind == "O":
        if is_b64(value):
            return _decode_b64(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        raise _type_error(value, dtype_enum)
    if kind == "b":
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype_enum)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype_enum)
    if kind in "iu" and not isinstance(value, int):
        raise _type_error(value, dtype_enum)
    return value


# The Python types a JSON leaf may have for each numpy kind (bool is not an int here).
_LEAF_TYPES = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}, "c": {int, float}}


def _numeric_leaves(leaves: list, dtype_enum: int, dtype: np.dtype) -> np.ndarray:
    """Numbers straight into an array: their types are checked in one pass at C speed (a
    Python check per leaf costs more than the conversion), the offender found only on failure."""
    if not set(map(type, leaves)) <= _LEAF_TYPES.get(dtype.kind, set()):
        for value in leaves:
            _leaf(value, dtype_enum, dtype.kind)
        raise invalid_argument(f"JSON values are not of expected type: {type_string(dtype_enum)}")
    try:
        with np.errstate(over="ignore"):  # a decimal past float32's range is inf, as a C++ cast makes it
            return np.array(leaves, dtype=dtype)
    except OverflowError:
        raise invalid_argument(f"a value does not fit {dtype_name(dtype_enum)}") from None


def json_to_array(value, dtype_enum: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A JSON value (scalar or nested lists) as an array of the signature's dtype; `shape`
    is `json_shape(value)` when the caller has it already."""
    dtype = numpy_dtype(dtype_enum)
    shape = json_shape(value) if shape is None else shape
    leaves: list = []
    _flatten(value, shape, 0, leaves)
    if dtype.kind == "O":
        array = np.empty(len(leaves), dtype=object)
        array[:] = [_leaf(v, dtype_enum, "O") for v in leaves]
    else:
        array = _numeric_leaves(leaves, dtype_enum, dtype)
    return array.reshape(shape)


# --- JSON text ---------------------------------------------------------------

def dumps(doc) -> bytes:
    """JSON bytes for a document that may hold the arrays `array_to_json` returns.

    orjson writes a numeric tensor about 13x faster than `json`, and each float32
    in the shortest form that reads back as the same float32. TF Serving's writer
    (json_tensor.cc) writes six significant digits where they read back exactly and
    nine where not, so the text can differ (0.12345679 here, 0.123456791 there;
    9000000.0 here, 9e+06 there) but never the values a client reads.
    """
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(text: bytes | str):
    """Parse JSON; NaN and Infinity, which TF Serving reads and writes, parse too. Nesting
    is bounded by orjson (1024 levels); the fallback that reads the NaN tokens stops at
    Python's recursion limit, which answers as a parse error too, and refuses the lone
    UTF-16 surrogates (`"\\ud83d"`) that it reads but no UTF-8 text can hold (orjson
    refuses them itself)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):
            raise
    try:
        doc = json.loads(text)  # accepts the NaN/Infinity tokens; raises for real errors
    except RecursionError:
        raise ValueError("JSON arrays or objects are nested too deeply") from None
    _check_utf8(doc)
    return doc


def _check_utf8(doc) -> None:
    pending = [doc]
    while pending:  # not recursive: the document may nest deeply
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a JSON string holds a lone UTF-16 surrogate, which is not text") from None


# --- numpy -> JSON ------------------------------------------------------------

# The numpy types orjson writes itself (C-contiguous arrays of these only).
_ORJSON_NUMERIC = frozenset(map(np.dtype, (
    np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
    np.uint64, np.uint32, np.uint16, np.uint8, np.bool_)))
_BFLOAT16 = np.dtype(tf.bfloat16.as_numpy_dtype)
# orjson writes these as null; TF Serving writes the tokens (and reads them back).
_NON_FINITE = {"nan": orjson.Fragment(b"NaN"), "inf": orjson.Fragment(b"Infinity"),
               "-inf": orjson.Fragment(b"-Infinity")}


def float_to_json(value: float, scalar_type=np.float32):
    """One decimal in the shortest form that reads back as the same `scalar_type` (0.1, not
    float32's 0.10000000149011612), or NaN, Infinity, -Infinity as TF Serving writes them."""
    return scalar_type(value) if math.isfinite(value) else _NON_FINITE[repr(float(value))]


def _json_string(value: bytes, as_b64: bool):
    if as_b64:
        return {B64_KEY: base64.b64encode(value).decode("ascii")}
    return value.decode("utf-8", errors="replace")


def array_to_json(array: np.ndarray, *, strings_as_b64: bool):
    """A numpy array as a value for `dumps`; byte strings as text or `{"b64": ...}`.

    Numeric arrays stay arrays for orjson to write, except those holding NaN or
    infinities, whose values are written one by one (`float_to_json`). Types JSON
    cannot hold (complex numbers) are refused with TF Serving's message.
    """
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        encode = np.frompyfunc(
            lambda v: _json_string(v.encode("utf-8") if isinstance(v, str) else bytes(v),
                                   strings_as_b64), 1, 1)
        return encode(array).tolist() if array.ndim else encode(array.item())
    if array.dtype == _BFLOAT16:
        array = array.astype(np.float32)  # exact: every bfloat16 is a float32
    if array.dtype not in _ORJSON_NUMERIC:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype.name}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        decimals = np.frompyfunc(lambda v: float_to_json(v, array.dtype.type), 1, 1)(array)
        return decimals.tolist() if array.ndim else decimals
    return array[()] if array.ndim == 0 else np.ascontiguousarray(array)


def output_to_json(name: str, array: np.ndarray):
    return array_to_json(array, strings_as_b64=name.endswith(BYTES_SUFFIX))


def rows_to_json(outputs: dict[str, np.ndarray]) -> list:
    """TF Serving's row format: one entry per example, a dict when there are several outputs."""
    sizes = set()
    for name, array in outputs.items():
        if np.ndim(array) == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        sizes.add(np.shape(array)[0])
    if len(sizes) > 1:
        raise invalid_argument(f"Tensors have inconsistent batch sizes {sorted(sizes)}; "
                               "use the columnar 'inputs' format for this signature")
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return output_to_json(name, array)
    return [{name: output_to_json(name, array[i]) for name, array in outputs.items()}
            for i in range(sizes.pop())]


def columns_to_json(outputs: dict[str, np.ndarray]):
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return output_to_json(name, array)
    return {name: output_to_json(name, array) for name, array in outputs.items()}


def json_to_output(value, dtype_enum: int) -> np.ndarray:
    """Client side: a JSON output back to a numpy array of the signature's dtype."""
    dtype = numpy_dtype(dtype_enum)
    if dtype.kind != "O":
        return np.asarray(value, dtype=dtype)
    decode = np.frompyfunc(
        lambda v: _decode_b64(v) if is_b64(v) else str(v).encode("utf-8"), 1, 1)
    shape = json_shape(value)
    leaves: list = []
    _flatten(value, shape, 0, leaves)
    out = np.empty(len(leaves), dtype=object)
    out[:] = [decode(v) for v in leaves]
    return out.reshape(shape)


# --- tf.train.Example <-> JSON -------------------------------------------------

def _feature_from_json(name: str, content) -> tf.train.Feature:
    values = content if isinstance(content, list) else [content]
    kinds = set()
    for value in values:
        if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64(value)):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {type(value).__name__}")
        kinds.add("bytes" if isinstance(value, (str, dict)) else
                  "float" if isinstance(value, float) else "int64")
    if len(kinds) > 1:
        raise invalid_argument(f"Unexpected element type in feature: {name} "
                               f"mixes {' and '.join(sorted(kinds))} values")
    kind = kinds.pop() if kinds else "float"
    if kind == "bytes":
        data = [_decode_b64(v) if isinstance(v, dict) else v.encode("utf-8") for v in values]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    integers = [int(v) for v in values]
    if any(not INT64_MIN <= v <= INT64_MAX for v in integers):
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported."
                               if max(integers) > INT64_MAX else f"Feature: {name} has an element below int64's range")
    return tf.train.Feature(int64_list=tf.train.Int64List(value=integers))


def example_from_json(value) -> tf.train.Example:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {type(value).__name__}")
    example = tf.train.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature_from_json(name, content))
    return example


def example_to_json(example: tf.train.Example) -> dict:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = [{B64_KEY: base64.b64encode(v).decode("ascii")} for v in feature.bytes_list.value]
        elif kind == "float_list":
            # Written with a decimal point (2.0), so the server reads them as floats again.
            out[name] = [float_to_json(v) for v in feature.float_list.value]
        elif kind == "int64_list":
            out[name] = list(feature.int64_list.value)
    return out


def example_from_features(features) -> tf.train.Example:
    """A dict of feature name -> values (numbers, strings, bytes) as a tf.train.Example."""
    if isinstance(features, tf.train.Example):
        return features
    example = tf.train.Example()
    for name, values in features.items():
        array = np.asarray(values).reshape(-1)
        feature = example.features.feature[name]
        if array.dtype.kind in "OSU":
            feature.bytes_list.value.extend(
                v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.tolist())
        elif array.dtype.kind == "f":
            feature.float_list.value.extend(array.tolist())
        elif array.dtype.kind in "iub":
            feature.int64_list.value.extend(int(v) for v in array.tolist())
        else:
            raise invalid_argument(f"feature {name!r} has unsupported dtype {array.dtype}")
    return example
