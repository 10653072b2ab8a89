"""Property tests of the embedded server's request decoders (fast tier, no server).

Hypothesis generates TensorProtos and JSON values, hostile ones included: wrong
and unknown dtypes, negative and huge dims, tensor_content of the wrong length,
too few and too many values, deep and ragged nesting. Whatever comes in, a
decoder either returns an array the signature accepts, within the request's
byte budget, or refuses with INVALID_ARGUMENT and a message about the request;
and what it accepts, it reads as TensorFlow's own parser reads it.
"""

import json
import math

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfbig.serving import ServingError, codec
from tfbig.serving.server.core import server_fault
from tfbig.serving.server.inputs import InputBudget, InputSpec, json_input, tensor_input
from tfbig.serving.server.rest_json import instances_to_inputs, parse_json

BUDGET = 1 << 16
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT8, types_pb2.DT_UINT8,
          types_pb2.DT_INT64, types_pb2.DT_BOOL, types_pb2.DT_STRING, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16,
          types_pb2.DT_COMPLEX64, types_pb2.DT_UINT32]
HOSTILE_DTYPES = DTYPES + [types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE, types_pb2.DT_INVALID, 999, -3]
# Class names that must never reach a client.
EXCEPTION_NAMES = ("Traceback", "Exception", "KeyError", "ValueError", "TypeError", "IndexError",
                   "RecursionError", "OverflowError", "AttributeError", "MemoryError")


def spec_of(dtype_enum: int, dims) -> InputSpec:
    return InputSpec(dtype_enum, codec.numpy_dtype(dtype_enum), dims)


def assert_client_error(error: ServingError) -> None:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.message and not any(name in error.message for name in EXCEPTION_NAMES), error.message


def decoded_or_refused(decode, *args):
    """What `decode` returns, or None once its refusal is checked to be a client error."""
    try:
        return decode(*args)
    except ServingError as error:
        assert_client_error(error)
        return None


dims_strategy = st.lists(
    st.one_of(st.integers(0, 6), st.sampled_from([-1, -(2 ** 31), 2 ** 31, 2 ** 40, 2 ** 63 - 1])),
    max_size=5)


@st.composite
def tensor_protos(draw, dtypes=HOSTILE_DTYPES):
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(dtypes)))
    for size in draw(dims_strategy):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val", "bool_val", "string_val",
                                  "half_val", "scomplex_val", "uint32_val", "tensor_content", None]))
    values = {
        "float_val": st.floats(width=32, allow_nan=False), "double_val": st.floats(allow_nan=False),
        "int_val": st.integers(-2 ** 31, 2 ** 31 - 1), "int64_val": st.integers(-2 ** 63, 2 ** 63 - 1),
        "bool_val": st.booleans(), "string_val": st.binary(max_size=8), "half_val": st.integers(0, 2 ** 31 - 1),
        "scomplex_val": st.floats(width=32, allow_nan=False), "uint32_val": st.integers(0, 2 ** 32 - 1),
    }
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif field is not None:
        getattr(proto, field).extend(draw(st.lists(values[field], max_size=12)))
    return proto


@SETTINGS
@given(proto=tensor_protos(), spec_dtype=st.sampled_from(DTYPES),
       spec_dims=st.one_of(st.none(), st.lists(st.sampled_from([-1, 0, 1, 2, 3]), max_size=4).map(tuple)))
def test_a_tensor_proto_is_decoded_within_its_signature_and_budget_or_refused(proto, spec_dtype, spec_dims):
    spec = spec_of(spec_dtype, spec_dims)
    array = decoded_or_refused(tensor_input, "x", proto, spec, "serving_default", InputBudget(BUDGET))
    if array is None:
        return
    assert proto.dtype == spec_dtype and array.dtype == spec.dtype
    assert spec.accepts_shape(array.shape) and array.size * spec.element_bytes() <= BUDGET


@SETTINGS
@given(proto=tensor_protos(dtypes=DTYPES))
def test_what_is_accepted_reads_as_tensorflow_reads_it(proto):
    """TensorFlow's own parser (tensor.cc's FromProto, behind tf.io.parse_tensor) decides what
    a TensorProto holds: filled shapes, ignored extras, truncated narrow integers."""
    spec = spec_of(proto.dtype, None)
    array = decoded_or_refused(tensor_input, "x", proto, spec, "serving_default", InputBudget(BUDGET))
    if array is None:
        return
    out_type = tf.dtypes.as_dtype(proto.dtype)
    expected = np.asarray(tf.io.parse_tensor(proto.SerializeToString(), out_type).numpy(), dtype=array.dtype)
    assert array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


def test_a_huge_declared_shape_is_refused_before_anything_is_allocated():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2 ** 31)
    with pytest.raises(ServingError) as refused:
        tensor_input("x", proto, spec_of(types_pb2.DT_FLOAT, (-1,)), "serving_default", InputBudget(64 << 20))
    assert_client_error(refused.value)
    assert "8589934592 bytes" in refused.value.message and "--max_tensor_bytes" in refused.value.message


def test_inputs_share_one_budget():
    budget = InputBudget(1000)
    proto = codec.to_tensor_proto(np.zeros(200, np.float32))  # 800 bytes
    tensor_input("a", proto, spec_of(types_pb2.DT_FLOAT, (-1,)), "s", budget)
    with pytest.raises(ServingError, match="input 'b' of shape \\[200\\] would take 800 bytes"):
        tensor_input("b", proto, spec_of(types_pb2.DT_FLOAT, (-1,)), "s", budget)


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                        st.floats(allow_nan=False), st.text(max_size=4),
                        st.builds(lambda s: {"b64": s}, st.sampled_from(["YQ==", "!!", ""])),
                        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=40)


@SETTINGS
@given(value=json_values, spec_dtype=st.sampled_from(DTYPES),
       spec_dims=st.one_of(st.none(), st.lists(st.sampled_from([-1, 1, 2]), max_size=3).map(tuple)))
def test_a_json_value_is_decoded_within_its_signature_and_budget_or_refused(value, spec_dtype, spec_dims):
    spec = spec_of(spec_dtype, spec_dims)
    array = decoded_or_refused(json_input, "x", value, spec, "serving_default", InputBudget(BUDGET))
    if array is None:
        return
    assert array.dtype == spec.dtype and spec.accepts_shape(array.shape)
    if spec.dtype.kind in "fi" and array.size:  # numbers read as numpy reads the same lists
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(array, np.array(value, dtype=spec.dtype))


@SETTINGS
@given(instances=st.lists(json_values, min_size=1, max_size=5), two_inputs=st.booleans())
def test_instances_are_stacked_or_refused(instances, two_inputs):
    specs = {"x": spec_of(types_pb2.DT_FLOAT, None)}
    if two_inputs:
        specs["tag"] = spec_of(types_pb2.DT_STRING, None)
        instances = [{"x": item, "tag": "a"} for item in instances]
    inputs = decoded_or_refused(instances_to_inputs, instances, specs, "serving_default", InputBudget(BUDGET))
    if inputs is None:
        return
    assert {len(array) for array in inputs.values()} == {len(instances)}


@SETTINGS
@given(body=st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps({"instances": v}).encode())))
def test_any_body_parses_or_is_a_parse_error(body):
    doc = decoded_or_refused(parse_json, body)
    if doc is None:
        return
    assert isinstance(doc, dict)


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"instances": [NaN, ' + b"[" * 990 + b"]" * 990 + b"]}",  # NaN: read by the json module's parser
])
def test_deep_nesting_is_a_parse_error(body):
    with pytest.raises(ServingError) as refused:
        parse_json(body)
    assert_client_error(refused.value)


def test_nesting_past_the_rank_limit_is_refused_before_recursing():
    value = 0.0
    for _ in range(1000):
        value = [value]
    with pytest.raises(ServingError, match="nested more than 64 deep"):
        json_input("x", value, spec_of(types_pb2.DT_FLOAT, None), "s", InputBudget(BUDGET))


def test_json_elements_are_charged_before_they_are_converted():
    value = [1] * 1000  # 8,000 bytes as int64
    with pytest.raises(ServingError, match="would take 8000 bytes"):
        json_input("x", value, spec_of(types_pb2.DT_INT64, (-1,)), "s", InputBudget(4000))


def test_a_fault_of_the_server_is_logged_with_its_traceback_and_hidden_from_the_client(caplog):
    try:
        math.sqrt(-1)
    except ValueError as error:
        fault = server_fault("Predict", error)
    assert fault.code == grpc.StatusCode.INTERNAL and "ValueError" not in fault.message
    incident = fault.message.split("incident ")[1].split()[0]
    record = caplog.records[-1]
    assert incident in record.getMessage() and record.exc_info[0] is ValueError
