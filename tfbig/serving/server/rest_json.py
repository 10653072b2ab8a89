"""TF Serving's REST requests, read as its http_rest_api_handler.cc and json_tensor.cc read them.

Pure functions from a request's URL parts and JSON to the ModelSpec, named
arrays or Input proto that ServingCore takes, with TF Serving's error
messages: the REST handlers (rest_api.py, rest_stream.py) share them, so a
body means the same on every URL.
"""

from __future__ import annotations

import urllib.parse

import numpy as np
from tensorflow_serving.apis import input_pb2, model_pb2

from tfbig.protocol import REST_CONTEXT, REST_EXAMPLES, REST_SIGNATURE_NAME
from tfbig.serving import codec
from tfbig.serving.errors import ServingError, invalid_argument
from tfbig.serving.server.inputs import InputBudget, InputSpec, json_input


def model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    """The model a URL's (still %-encoded) name, version and label parts name."""
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version:
        if int(version) > codec.INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    if label:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def parse_json(body: bytes) -> dict:
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = codec.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {body[:100]!r} Is not object")
    signature = doc.get(REST_SIGNATURE_NAME, "")
    if not isinstance(signature, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return doc


def _instances_input(name: str, items: list, spec: InputSpec, signature: str, budget: InputBudget):
    """One input's values across the instances, stacked: every item must have the first one's
    shape (json_tensor.cc), so the count is known, and charged, before a leaf is converted."""
    shape = codec.json_shape(items[0])
    for index, item in enumerate(items):
        if isinstance(item, list) != bool(shape) or (shape and len(item) != shape[0]):
            got = codec.json_shape(item)
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. "
                                   f"Error: Expecting shape {list(shape)} but got: {list(got)}")
    try:
        return json_input(name, items, spec, signature, budget)
    except ServingError as error:
        raise invalid_argument(f"Failed to process 'instances' list for input '{name}'. "
                               f"Error: {error.message}") from None


def instances_to_inputs(instances: list, specs: dict[str, InputSpec], signature: str,
                        budget: InputBudget) -> dict[str, np.ndarray]:
    """Row format: one entry per example, objects keyed by input name when there are several."""
    names = sorted(specs)
    as_objects = isinstance(instances[0], dict) and not codec.is_b64(instances[0])
    if not as_objects and len(names) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                               "input tensors required as per tensorinfo_map")
    if not as_objects:
        return {names[0]: _instances_input(names[0], instances, specs[names[0]], signature, budget)}
    columns: dict[str, list] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if not isinstance(item, dict) or codec.is_b64(item):
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. Error: "
                                   f"Expecting object but got list at item {index} of input list")
        if item.keys() != columns.keys():
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. Error: "
                                   f"JSON object keys {sorted(item)} must be equal to: {','.join(names)}")
        for name in names:
            columns[name].append(item[name])
    return {name: _instances_input(name, column, specs[name], signature, budget)
            for name, column in columns.items()}


def columns_to_inputs(value, specs: dict[str, InputSpec], signature: str,
                      budget: InputBudget) -> dict[str, np.ndarray]:
    """Columnar format: one value per input (just the value when there is one input)."""
    if not isinstance(value, dict) or codec.is_b64(value):
        if len(specs) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   "input tensors required as per tensorinfo_map")
        name = next(iter(specs))
        return {name: json_input(name, value, specs[name], signature, budget)}
    inputs = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        inputs[name] = json_input(name, value[name], spec, signature, budget)
    return inputs


def examples_input(doc: dict, method: str):
    """A classify/regress request's `examples` (and optional `context`) as an Input proto."""
    request_input = input_pb2.Input()
    examples = doc.get(REST_EXAMPLES)
    if examples is None:
        raise invalid_argument(f"When method is {method}, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise invalid_argument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument("'examples' value is an empty array")
    if REST_CONTEXT in doc:
        target = request_input.example_list_with_context
        target.context.CopyFrom(codec.example_from_json(doc[REST_CONTEXT]))
    else:
        target = request_input.example_list
    target.examples.extend(codec.example_from_json(example) for example in examples)
    return request_input
