"""TFLite variants of the predict signature, run in the LiteRT interpreter.

float32: plain conversion. float16: weights stored as float16. dynamic_range:
weights int8, activations float. int8: weights and activations int8,
calibrated on real training examples, with float fallback for ops that have
no int8 kernel; inputs and outputs stay float/int32 so every variant is
called alike. (Models compressed by `tfbig compress` convert the same way.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tfbig.export.signatures import INPUT_KEY, LOGITS, PREDICT, predict_function


def tflite_file(variant: str) -> str:
    return f"model_{variant}.tflite"


def convert_tflite(predict, model, variant: str, path: str, *,
                   calibration: np.ndarray | None = None) -> str:
    """Convert the `predict` tf.function of `model` to the TFLite `variant` at `path`.

    The converter names the single signature `serving_default`, as in the SavedModel.
    """
    # A module holding only the variables: handing the Keras model itself makes
    # the converter re-trace every layer (9 s instead of 2 s for a small CNN).
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [predict.get_concrete_function()], holder)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if calibration is None:
            raise ValueError("int8 TFLite conversion needs calibration examples")
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
    with open(path, "wb") as f:
        f.write(without_tensor_names(converter.convert()))
    return path


def without_tensor_names(flatbuffer: bytes) -> bytes:
    """The model minus its tensor names, which only debugging tools read.

    Names of fused ops concatenate every TF op folded into them, so they are
    a visible part of a small model: 2,687 of the 92,736 bytes of the QAT
    digits CNN (3.3 %). Signatures, which callers use, keep their own names.
    A model over 2 GB keeps its weights after the flatbuffer, which the
    flatbuffer object API would not carry over: it is left as it is.
    """
    if len(flatbuffer) >= 2**31:
        return flatbuffer
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert_int8(model, spec, path: str, calibration=None) -> str:
    """The QAT `model` (see `tfbig.train.compression.quantize`) as an int8 TFLite file at `path`.

    Without `calibration` (the default) the converter takes every range from
    the FakeQuant ops and nothing else (TF's QAT recipe: Optimize.DEFAULT and
    no representative data, which is `convert_tflite`'s "dynamic_range"
    setting), so the file computes what the QAT model simulated: int8 where
    QAT quantized, float where it did not. Conv and Dense on 2-D inputs (the
    CNN, the MLP) run int8. Upstream limit, measured for plain
    `quantize_model` too: a Dense on 3-D inputs (a transformer's MLP) is
    lowered to reshape, matmul, reshape, bias-add; the FakeQuant after the
    bias-add does not reach the matmul, so the converter folds the
    fake-quantized kernel into a float constant and multiplies in float. The
    attention projections keep int8-stored kernels but also multiply in float.

    With `calibration` examples the conversion is full-integer
    (`convert_tflite`'s "int8"): every op with an int8 kernel gets a range,
    calibrated where QAT left none, including the float-by-rule LayerNorms,
    embeddings and residual Adds. For a transformer that is smaller and runs
    int8 matmuls, but it is no longer what QAT trained for (the test GPT
    after 30 steps: 82-94% top-1 agreement with the QAT model over three
    runs, against 99.98-100% without calibration; 64 KB against 106 KB).
    """
    variant = "dynamic_range" if calibration is None else "int8"
    return convert_tflite(predict_function(model, spec), model, variant, path,
                          calibration=calibration)


class TFLiteRunner:
    """inputs (numpy) -> logits (numpy) through the predict signature's runner."""

    def __init__(self, path: str, *, num_threads: int | None = None):
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = interpreter.get_signature_runner(PREDICT)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.runner(**{INPUT_KEY: inputs})[LOGITS]
