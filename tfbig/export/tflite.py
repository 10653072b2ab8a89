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

from tfbig.export.signatures import INPUT_KEY, PREDICT


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


class TFLiteRunner:
    """inputs (numpy) -> logits (numpy) through the predict signature's runner."""

    def __init__(self, path: str, *, num_threads: int | None = None):
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = interpreter.get_signature_runner(PREDICT)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.runner(**{INPUT_KEY: inputs})["logits"]
