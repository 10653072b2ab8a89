"""ONNX export of the predict signature through tf2onnx, run in ONNX Runtime.

tf2onnx 1.17 has no converter for TensorFlow's `Erfc`, which exact GELU
lowers to in TF 2.21 (our transformer MLPs use it); we register one,
`erfc(x) = 1 - erf(x)`, using ONNX's `Erf` (opset >= 9).
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import tf2onnx
from tf2onnx import utils as onnx_utils
from tf2onnx.handler import tf_op

DEFAULT_OPSET = 17
ONNX_FILE = "model.onnx"


@tf_op("Erfc")
class _Erfc:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        dtype = onnx_utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        node.type = "Erf"
        one = ctx.make_const(onnx_utils.make_name(f"{node.name}_one"), np.array(1, dtype))
        complement = ctx.insert_new_node_on_output(
            "Sub", node.output[0], name=onnx_utils.make_name(f"{node.name}_erfc"))
        ctx.replace_inputs(complement, [one.output[0], node.output[0]])


def export_onnx(predict, path: str, *, opset: int = DEFAULT_OPSET) -> str:
    """Convert the `predict` tf.function (one input, `logits` out) to `path`."""
    tf2onnx.convert.from_function(
        predict, input_signature=predict.input_signature, opset=opset, output_path=path,
    )
    return path


class OnnxRunner:
    """inputs (numpy) -> logits (numpy) through an ONNX Runtime CPU session."""

    def __init__(self, path: str):
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]
