"""Quantization-aware training (TF-MOT default 8-bit scheme) inside tfbig's loop.

`QATMethod.wrap` annotates layer by layer and calls `quantize_apply`, rather
than `quantize_model`, which would put a FakeQuant after the int32 token input
of a language model and refuses MultiHeadAttention, LayerNormalization and
tfbig's own layers. The rules, applied in the model's layer order:
- embeddings (token and position) and LayerNormalization stay float by rule:
  TF-MOT's registry has no quantization for them (it leaves Embedding out
  until "verified with TFLite"), and a lookup or a normalisation gains little
  from int8 while its rounding reaches every position;
- Dense and Conv (BatchNormalization folded in), and everything else TF-MOT's
  registry knows, are quantized if `compress.qat.layers` matches them;
- MultiHeadAttention gets tfbig's `AttentionQuantizeConfig`, which treats its
  four EinsumDense projections as TF-MOT treats Dense (per-tensor kernel, output
  range);
- a layer without weights (Add, ReLU, Dropout, pooling) is quantized only if
  all its inputs are: inside an int8 region (the CNN) that keeps the data int8,
  as `quantize_model` does; at a float boundary (the transformer's residual
  stream, which carries the float embeddings into float LayerNorms) a
  FakeQuant would only add rounding, so the residual Adds stay float;
- a float layer whose output an int8 layer reads (a LayerNorm before Dense or
  attention) gets its output quantized, so the int8 layer has an input range.
  TF-MOT does this itself only for producers in its registry. Annotating the
  LayerNorm would not do: `quantize_apply` then quantizes the output of the
  residual Add before it as well (it gives every annotated layer with one
  input a quantized input), so tfbig wraps it in a `QuantizeWrapperV2` itself.
Each decision is recorded: `quantized` (names) and `left_float` (name: reason).

Upstream trouble, verified with TF 2.21 / TF-MOT 0.8.1, and the workarounds:
- MirroredStrategy + tfbig's Trainer: TF-MOT's MovingAverageQuantizer updates
  its range through `assign_moving_average`, which in a replica context
  calls `merge_call`; the Trainer computes gradients in a tf.function nested
  in `strategy.run`, where a `merge_call` raises ("merge_call called while
  defining a new graph"). (`model.fit` has no such nesting.) tfbig swaps each
  one for `RangeQuantizer`, the same EMA (decay 0.999) updated in place.
- The range variables are non-trainable MirroredVariables with aggregation
  NONE; a replica-context assign to one updates only that replica's copy, so
  the "mirrored" copies drift apart silently and checkpoints and export read
  replica 0's. tfbig creates them as SyncOnRead/MEAN, like Keras
  BatchNormalization's moving statistics: each replica keeps its own EMA and
  a read outside the replicas averages them, which equals the EMA of the
  cross-replica mean that TF-MOT's `merge_call` computes.
- TFLite: a QAT model built and trained under MirroredStrategy converts as
  it is, inside or outside `strategy.scope()` (checked with these SyncOnRead
  ranges and with TF-MOT's own MirroredVariables), so no rebuild outside the
  strategy is needed. What matters is the converter setting:
  `tfbig.export.tflite.convert_int8`.

`finalize` is the identity (the base class's): the export keeps the FakeQuant
ops, and TFLite conversion turns them into int8 tensors.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
# Not exported by tfmot: the registry behind `quantize_model`, and its output-only config.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs, default_8bit_quantize_registry)

from tfbig.train.compression.method import Method, layer_selector, require_selected
from tfbig.config import QATConfig
from tfbig.models.layers import PositionEmbedding

qkeras = tfmot.quantization.keras
quantizers = qkeras.quantizers

FLOAT_BY_RULE = {
    keras.layers.Embedding: "embedding: float by rule",
    PositionEmbedding: "position embedding: float by rule",
    keras.layers.LayerNormalization: "LayerNormalization: float by rule",
}
CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
REGISTRY = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
OutputQuantizeConfig = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig
# TF-MOT's MovingAverageQuantizer's decay.
EMA_DECAY = 0.999


class KernelQuantizer(quantizers.LastValueQuantizer):
    """TF-MOT's Dense kernel quantizer (8-bit, per-tensor, symmetric) for one projection.

    Its range variables are named after the projection: the four kernels of
    an attention layer share one wrapper. With `preserve_sparsity` the zeros
    of the kernel get no gradient, so they stay zero, as TF-MOT's
    prune-preserving quantizers keep them for Dense and Conv.
    """

    def __init__(self, prefix: str, preserve_sparsity: bool):
        super().__init__(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        self.prefix = prefix
        self.preserve_sparsity = preserve_sparsity

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, f"{self.prefix}_{name}", layer)

    def __call__(self, inputs, training, weights, **kwargs):
        if self.preserve_sparsity:
            inputs = inputs * tf.cast(tf.not_equal(inputs, 0), inputs.dtype)
        return super().__call__(inputs, training, weights, **kwargs)

    def get_config(self):
        return {"prefix": self.prefix, "preserve_sparsity": self.preserve_sparsity}


class RangeQuantizer(quantizers.MovingAverageQuantizer):
    """TF-MOT's activation quantizer (8-bit, per-tensor, asymmetric), merge_call-free.

    The same moving average of each batch's range as TF-MOT's, assigned to
    the replica's own copy of the (SyncOnRead) range variables instead of
    through `assign_moving_average`: see the module docstring.
    """

    def __init__(self, prefix: str = ""):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        self.prefix = prefix

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, "_".join(filter(None, [self.prefix, name])), layer)

    def __call__(self, inputs, training, weights, **kwargs):
        if training:
            low = tf.minimum(tf.reduce_min(inputs), 0.0)
            high = tf.maximum(tf.reduce_max(inputs), 0.0)
            min_var, max_var = weights["min_var"], weights["max_var"]
            weights = {"min_var": min_var.assign_sub((min_var - low) * (1 - EMA_DECAY)),
                       "max_var": max_var.assign_sub((max_var - high) * (1 - EMA_DECAY))}
        # Not training, the parent only fake-quantizes with the given range.
        return super().__call__(inputs, False, weights, **kwargs)

    def get_config(self):
        return {"prefix": self.prefix}


@keras.saving.register_keras_serializable(package="tfbig")
class AttentionQuantizeConfig(qkeras.QuantizeConfig):
    """MultiHeadAttention as four quantized EinsumDense projections.

    Each of query/key/value/output projection is quantized as TF-MOT
    quantizes a Dense: its kernel per-tensor, its output (its linear
    activation) with a moving-average range. The output projection's output
    is the layer's. The attention scores and softmax stay float: the layer
    has no hook between its projections.
    """

    PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")

    def __init__(self, preserve_sparsity: bool = False):
        self.preserve_sparsity = preserve_sparsity

    def projections(self, layer) -> list[keras.layers.Layer]:
        return [getattr(layer, name) for name in self.PROJECTIONS]

    def get_weights_and_quantizers(self, layer):
        return [(p.kernel, KernelQuantizer(p.name, self.preserve_sparsity))
                for p in self.projections(layer)]

    def get_activations_and_quantizers(self, layer):
        return [(p.activation, RangeQuantizer(p.name)) for p in self.projections(layer)]

    def set_quantize_weights(self, layer, quantize_weights):
        for projection, kernel in zip(self.projections(layer), quantize_weights):
            projection.kernel = kernel

    def set_quantize_activations(self, layer, quantize_activations):
        for projection, activation in zip(self.projections(layer), quantize_activations):
            projection.activation = activation

    def get_output_quantizers(self, layer):
        # The wrapper would need the output shape, which MultiHeadAttention's
        # `compute_output_shape(query, value)` cannot give from one input
        # shape; the output projection's activation quantizer covers it.
        return []

    def get_config(self):
        return {"preserve_sparsity": self.preserve_sparsity}


@contextlib.contextmanager
def sync_on_read_ranges():
    """Create non-trainable float variables (quantization ranges) as SyncOnRead/MEAN."""

    def creator(next_creator, **kwargs):
        floating = tf.as_dtype(kwargs.get("dtype") or tf.float32).is_floating
        automatic = kwargs.get("synchronization") in (None, tf.VariableSynchronization.AUTO)
        if not kwargs.get("trainable", True) and floating and automatic:
            kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
            kwargs["aggregation"] = tf.VariableAggregation.MEAN
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield


def use_range_quantizers(model: keras.Model) -> None:
    """Replace TF-MOT's MovingAverageQuantizers in the built `model` by `RangeQuantizer`s.

    They are created inside the wrappers' `build`, out of reach of the
    QuantizeConfigs of TF-MOT's registry and layout transforms, so the swap
    happens on the built wrappers; their range variables are kept.
    """

    def swap(quantizer):
        moving_average = type(quantizer) is quantizers.MovingAverageQuantizer
        return RangeQuantizer() if moving_average else quantizer

    for layer in model.layers:
        if isinstance(layer, qkeras.QuantizeWrapper):
            for activation in layer._quantize_activations:
                activation.quantizer = swap(activation.quantizer)
            layer._output_quantizers = [swap(q) for q in layer._output_quantizers]


def inbound_layers(model: keras.Model) -> dict[str, list[str]]:
    """{layer name: names of the layers whose outputs it takes}, over all its calls."""
    return {layer["name"]: [entry[0] for node in layer["inbound_nodes"] for entry in node]
            for layer in model.get_config()["layers"]}


def float_reason(layer, *, selected, inputs_quantized: bool,
                 after_convolution: bool) -> str | None:
    """Why `layer` computes in float, or None if it is quantized."""
    for kind, reason in FLOAT_BY_RULE.items():
        if isinstance(layer, kind):
            return reason
    if not selected(layer.name):
        return "not matched by compress.qat.layers"
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return None
    if isinstance(layer, keras.layers.BatchNormalization):
        return None if after_convolution else (
            "BatchNormalization: TF-MOT quantizes it only folded into the convolution before it")
    if not REGISTRY.supports(layer):
        return f"{type(layer).__name__}: TF-MOT's 8-bit scheme cannot quantize it"
    if not layer.weights and not inputs_quantized:
        return "no weights and a float input: a fake-quant here would only add rounding"
    return None


class QATMethod(Method):
    def __init__(self, cfg: QATConfig):
        self.cfg = cfg
        self.quantized: list[str] = []
        self.left_float: dict[str, str] = {}

    def plan(self, model: keras.Model) -> dict:
        """{layer name: its QuantizeConfig, or None for TF-MOT's} of every layer to wrap.

        Fills `quantized` and `left_float` on the way.
        """
        selected = layer_selector(self.cfg.layers, "compress.qat.layers")
        inbound = inbound_layers(model)
        # TF-MOT quantizes a float model input itself (QuantizeLayer); token ids never.
        quantized = {layer.name for layer in model.layers
                     if isinstance(layer, keras.layers.InputLayer)
                     and tf.as_dtype(layer.dtype).is_floating}
        configs, self.quantized, self.left_float = {}, [], {}
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            sources = inbound[layer.name]
            reason = float_reason(
                layer, selected=selected,
                inputs_quantized=all(name in quantized for name in sources),
                after_convolution=any(name in quantized and isinstance(
                    model.get_layer(name), CONVOLUTIONS) for name in sources))
            if reason:
                self.left_float[layer.name] = reason
                continue
            quantized.add(layer.name)
            self.quantized.append(layer.name)
            configs[layer.name] = (AttentionQuantizeConfig(self.cfg.preserve_sparsity)
                                   if isinstance(layer, keras.layers.MultiHeadAttention)
                                   else None)
        for name, reason in self.left_float.items():
            if any(name in inbound[consumer] for consumer in self.quantized):
                configs[name] = OutputQuantizeConfig()
                self.left_float[name] = f"{reason} (its output is quantized: int8 layers read it)"
        return configs

    def wrap(self, model: keras.Model) -> keras.Model:
        configs = self.plan(model)
        require_selected(model, [name for name in self.quantized
                                 if model.get_layer(name).weights],
                         key="compress.qat.layers", what="quantized")

        def annotate(layer):
            if layer.name not in configs:
                return layer
            if isinstance(configs[layer.name], OutputQuantizeConfig):
                return qkeras.QuantizeWrapperV2(layer, configs[layer.name])
            return qkeras.quantize_annotate_layer(layer, configs[layer.name])

        if self.cfg.preserve_sparsity:
            scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        else:
            scheme = qkeras.default_8bit.Default8BitQuantizeScheme()
        with sync_on_read_ranges(), qkeras.quantize_scope():
            annotated = keras.models.clone_model(model, clone_function=annotate)
            wrapped = qkeras.quantize_apply(annotated, scheme)
        use_range_quantizers(wrapped)
        return wrapped

