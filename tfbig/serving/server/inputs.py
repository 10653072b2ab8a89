"""A request's input tensors, checked against the signature before anything is allocated.

A TensorProto declares its shape apart from its values, and TensorFlow fills a
declared shape that carries fewer values (none: zeros; some: the last one
repeated). Decoded naively, a 20-byte request declaring `dim { size: 2147483648 }`
makes the server allocate 8 GB. So each input's dtype and shape are checked
against the SignatureDef, and its declared size is charged to the request's
`InputBudget`, before a byte of it is built; the budget defaults to the largest
message the server accepts (`--max_request_bytes`), so a filled tensor is never
bigger than one a client could have sent outright. Within that, TensorFlow's
rules hold (tensor.cc FromProtoField): missing values are filled, extra ones
ignored.

REST bodies take the same checks through `json_input`: the element count of a
JSON array is known from its shape before its leaves are converted.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfbig.serving import codec
from tfbig.serving.errors import invalid_argument

# A string element costs its object pointer in the decoded array; its bytes are already
# in the request.
_OBJECT_BYTES = np.dtype(object).itemsize
# The proto field that carries each dtype's values and the numpy type they arrive in
# (tensor.cc's ProtoHelper): narrow integers travel as int32 and are truncated, half and
# bfloat16 as their bit patterns in int32, complex numbers as (real, imaginary) pairs.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", np.float32),
    types_pb2.DT_DOUBLE: ("double_val", np.float64),
    types_pb2.DT_INT32: ("int_val", np.int32),
    types_pb2.DT_INT16: ("int_val", np.int32),
    types_pb2.DT_INT8: ("int_val", np.int32),
    types_pb2.DT_UINT8: ("int_val", np.int32),
    types_pb2.DT_UINT16: ("int_val", np.int32),
    types_pb2.DT_INT64: ("int64_val", np.int64),
    types_pb2.DT_UINT32: ("uint32_val", np.uint32),
    types_pb2.DT_UINT64: ("uint64_val", np.uint64),
    types_pb2.DT_BOOL: ("bool_val", np.bool_),
    types_pb2.DT_HALF: ("half_val", np.int32),
    types_pb2.DT_BFLOAT16: ("half_val", np.int32),
    types_pb2.DT_COMPLEX64: ("scomplex_val", np.float32),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", np.float64),
    types_pb2.DT_STRING: ("string_val", object),
}
_MAX_ELEMENT_BYTES = 16  # complex128
_HALF_BITS = frozenset((types_pb2.DT_HALF, types_pb2.DT_BFLOAT16))


def dtype_text(dtype_enum: int) -> str:
    """A DataType's name (float32, string), even for a number that names no DataType."""
    try:
        return codec.dtype_name(dtype_enum)
    except (TypeError, ValueError, KeyError):
        return f"unknown DataType {dtype_enum}"


class InputSpec(NamedTuple):
    """What a SignatureDef declares for one input, read out of its proto once at load:
    every request is checked against it, and proto fields are slow to walk."""

    dtype_enum: int
    dtype: np.dtype
    dims: tuple[int, ...] | None  # None: any shape; -1: any size

    @classmethod
    def of(cls, info: meta_graph_pb2.TensorInfo) -> "InputSpec":
        dims = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(info.dtype, codec.numpy_dtype(info.dtype), dims)

    def accepts_dtype(self, dtype: np.dtype) -> bool:
        if self.dtype.kind == "O":
            return dtype.kind in "OSU"
        return dtype == self.dtype

    def accepts_shape(self, shape: tuple) -> bool:
        return self.dims is None or (
            len(self.dims) == len(shape) and all(d < 0 or d == s for d, s in zip(self.dims, shape)))

    def shape_text(self) -> str:
        if self.dims is None:
            return "any shape"
        return "[" + ", ".join("?" if d < 0 else str(d) for d in self.dims) + "]"

    def element_bytes(self) -> int:
        return _OBJECT_BYTES if self.dtype.kind == "O" else self.dtype.itemsize


def check_names(signature_name: str, specs: dict[str, InputSpec], sent) -> None:
    """The request's input names are the signature's, in TF Serving's words when not."""
    if specs.keys() != set(sent):
        expected, sent = set(specs), set(sent)
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")


def check_shape(name: str, signature_name: str, spec: InputSpec, shape: tuple) -> None:
    if not spec.accepts_shape(shape):
        raise invalid_argument(f"input '{name}' has shape {list(shape)} but signature "
                               f"'{signature_name}' expects {spec.shape_text()}")


class InputBudget:
    """The bytes one request's decoded inputs may take together (--max_tensor_bytes)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._left = max_bytes

    def charge(self, name: str, shape, element_bytes: int) -> None:
        """Take an input's declared size from the budget, or refuse the request."""
        size = math.prod(shape) * element_bytes  # Python ints: no overflow, however large the dims
        if size > self._left:
            raise invalid_argument(
                f"input '{name}' of shape {list(shape)} would take {size} bytes; this server decodes "
                f"at most {self.max_bytes} bytes of inputs per request (--max_tensor_bytes)")
        self._left -= size


def _proto_shape(name: str, proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input '{name}' has an unknown rank; a request tensor needs a shape")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if len(shape) > codec.MAX_RANK:
        raise invalid_argument(f"input '{name}' has {len(shape)} dimensions; at most {codec.MAX_RANK} are taken")
    if any(size < 0 for size in shape):
        raise invalid_argument(f"input '{name}' has a negative dimension in its shape {list(shape)}")
    # An empty tensor may declare any other dims, but neither TensorFlow nor numpy can hold
    # a shape whose other dims multiply past int64 (counted in bytes of the widest type).
    if math.prod(size for size in shape if size) * _MAX_ELEMENT_BYTES > codec.INT64_MAX:
        raise invalid_argument(f"input '{name}' has a shape {list(shape)} whose dimensions multiply past int64")
    return shape


def _from_content(name: str, proto: tensor_pb2.TensorProto, spec: InputSpec, shape) -> np.ndarray:
    expected = math.prod(shape) * spec.dtype.itemsize
    if len(proto.tensor_content) != expected:
        raise invalid_argument(
            f"input '{name}' carries {len(proto.tensor_content)} bytes of tensor_content, but its shape "
            f"{list(shape)} of {dtype_text(spec.dtype_enum)} needs {expected}")
    # Read-only and backed by the request: the server only reads its inputs.
    return np.frombuffer(proto.tensor_content, dtype=spec.dtype).reshape(shape)


def _given_values(proto: tensor_pb2.TensorProto, spec: InputSpec, count: int):
    """The values the request carries, at most `count` of them (TensorFlow ignores extras)."""
    field, wire_type = _VALUE_FIELDS[spec.dtype_enum]
    per_element = 2 if spec.dtype.kind == "c" else 1
    values = getattr(proto, field)
    sent = min(len(values) // per_element, count)
    # fromiter: one Python number at a time, never a list of all of them (32 bytes each).
    wire = np.fromiter(itertools.islice(values, sent * per_element), dtype=wire_type, count=sent * per_element)
    if wire_type is object:
        return wire
    if spec.dtype_enum in _HALF_BITS:
        return wire.astype(np.uint16).view(spec.dtype)
    if per_element == 2:
        return wire.view(spec.dtype)
    return wire.astype(spec.dtype, copy=False)


def _from_values(proto: tensor_pb2.TensorProto, spec: InputSpec, shape) -> np.ndarray:
    count = math.prod(shape)
    given = _given_values(proto, spec, count)
    array = np.empty(count, dtype=spec.dtype)
    if len(given) == 0:  # no values: TensorFlow's default, zeros or empty strings
        array[:] = b"" if spec.dtype.kind == "O" else 0
    else:  # too few: the last one repeated
        array[:len(given)] = given
        array[len(given):] = given[-1]
    return array.reshape(shape)


def tensor_input(name: str, proto: tensor_pb2.TensorProto, spec: InputSpec, signature_name: str,
                 budget: InputBudget) -> np.ndarray:
    """One gRPC input as an array of the signature's dtype and shape, within the budget."""
    if proto.dtype != spec.dtype_enum:
        raise invalid_argument(f"input '{name}' is {dtype_text(proto.dtype)} but signature "
                               f"'{signature_name}' expects {dtype_text(spec.dtype_enum)}")
    if spec.dtype_enum not in _VALUE_FIELDS:
        raise invalid_argument(f"input '{name}' is {dtype_text(spec.dtype_enum)}, which this server "
                               f"does not take in requests")
    shape = _proto_shape(name, proto)
    check_shape(name, signature_name, spec, shape)
    budget.charge(name, shape, spec.element_bytes())
    if proto.tensor_content:
        if spec.dtype.kind == "O":
            raise invalid_argument(f"input '{name}' is a string tensor in tensor_content; "
                                   f"send its strings in string_val")
        return _from_content(name, proto, spec, shape)
    return _from_values(proto, spec, shape)


def json_input(name: str, value, spec: InputSpec, signature_name: str, budget: InputBudget) -> np.ndarray:
    """One REST input (a JSON value of nested lists) as an array, within the budget."""
    shape = codec.json_shape(value)
    check_shape(name, signature_name, spec, shape)
    budget.charge(name, shape, spec.element_bytes())
    return codec.json_to_array(value, spec.dtype_enum, shape=shape)
