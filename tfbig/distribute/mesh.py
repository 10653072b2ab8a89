"""DTensor tensor parallelism for the GPT: a `batch` x `model` device mesh, a
Keras LayoutMap that splits the big weights Megatron-style, and a measure of
what each device then holds.

Megatron's pairing costs one all-reduce per sub-layer: a column-parallel
matmul (output features split over `model`) feeds a row-parallel one (input
features split the same way), so the activation between them stays split and
only the row-parallel output is summed over `model`. In the attention the
split features are whole heads (query/key/value kernels split on their heads
dimension, the output projection on its heads input); in the MLP they are the
d_ff units (mlp_in's columns, mlp_out's rows).

The token embedding is split on d_model, not on the vocabulary as Megatron
does: DTensor's gather un-shards the gathered axis, so a vocabulary-split
table would be all-gathered whole onto every device at each lookup, while a
d_model split keeps the lookup local. The tied output head then contracts over
the split d_model, a partial sum DTensor all-reduces; an untied head is split
the same way. Norms, positions and the biases added after a row-parallel
matmul are replicated: small, and needed whole on every device. Along `batch`
everything is replicated (plain data parallelism).
"""

from __future__ import annotations

import contextlib
import os
import re

import tensorflow as tf
import tf_keras as keras
from tensorflow.dtensor.python import accelerator_util
from tensorflow.experimental import dtensor

from tfbig.config import ConfigError, GPTConfig, MeshConfig
from tfbig.distribute.strategy import StrategyError, split_cpu
from tfbig.models.transformer import feed_forward_dim

BATCH, MODEL = "batch", "model"
_U = dtensor.UNSHARDED

# (regex over the variable paths tf_keras's LayoutMap asks about, sharding
# spec; None = replicated). For a functional model a path is the layer name,
# then the attribute path inside the layer. Every GPT weight has a rule, so a
# renamed layer is an error (see GPTLayoutMap) rather than silently replicated.
GPT_RULES = (
    (r"token_embedding\.embeddings", (_U, MODEL)),
    # Column-parallel: kernels (d_model, heads, head_dim) and (d_model, d_ff).
    (r"block\d+_attention\._(query|key|value)_dense\.kernel", (_U, MODEL, _U)),
    (r"block\d+_attention\._(query|key|value)_dense\.bias", (MODEL, _U)),
    (r"block\d+_mlp_in\.kernel", (_U, MODEL)),
    (r"block\d+_mlp_in\.bias", (MODEL,)),
    # Row-parallel: kernels (heads, head_dim, d_model) and (d_ff, d_model).
    (r"block\d+_attention\._output_dense\.kernel", (MODEL, _U, _U)),
    (r"block\d+_mlp_out\.kernel", (MODEL, _U)),
    (r"block\d+_attention\._output_dense\.bias", None),
    (r"block\d+_mlp_out\.bias", None),
    (r"(block\d+_ln[12]|final_ln)\.(gamma|beta)", None),
    (r"position_embedding\.embeddings", None),
)
UNTIED_HEAD_RULE = (r"logits\.kernel", (MODEL, _U))

# DTensor's pass that combines all-reduces moves them past the optimizer's
# slot updates: a step then reads a slot before writing it, and the GPT's
# first optimizer update is silently lost (TF 2.21, SGD and Adam alike).
COMBINE_ALL_REDUCES = "DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION"


def make_mesh(cfg: MeshConfig) -> dtensor.Mesh:
    """The `batch` x `model` mesh on GPUs if there are any, else on logical CPUs.

    Call before any TensorFlow op: only then can the CPU be split, or GPUs be
    paired with the host CPUs that DTensor's input pipelines run on.
    """
    os.environ.setdefault(COMBINE_ALL_REDUCES, "0")
    count = cfg.batch * cfg.model
    if tf.config.list_physical_devices("GPU"):
        devices = _gpus(count)
    else:
        try:
            devices = split_cpu(count)
        except StrategyError as error:
            raise StrategyError(
                f"distribute.mesh: {cfg.batch} (batch) x {cfg.model} (model) needs "
                f"{count} devices. {error}"
            ) from None
    return dtensor.create_mesh([(BATCH, cfg.batch), (MODEL, cfg.model)], devices=devices)


def _gpus(count: int) -> list[str]:
    available = len(tf.config.list_physical_devices("GPU"))
    if count > available:
        raise StrategyError(
            f"distribute.mesh: batch x model = {count} devices, but only {available} "
            f"GPUs are visible; make batch * model at most {available}"
        )
    if not accelerator_util.is_initialized():
        try:
            dtensor.initialize_accelerator_system("GPU")
        except ValueError:
            raise StrategyError(
                "distribute.strategy=dtensor on GPUs sets the devices up before "
                "TensorFlow starts; build the strategy before running any TensorFlow "
                "op, or start a fresh process"
            ) from None
    return [f"GPU:{i}" for i in range(count)]


class GPTLayoutMap(keras.dtensor.experimental.LayoutMap):
    """A LayoutMap over the GPT's rules that records which weights each rule took.

    tf_keras gives a path no rule matches a replicated layout without a word,
    so a renamed layer would quietly lose its sharding; `check` turns that
    into an error once the model is built.
    """

    def __init__(self, mesh: dtensor.Mesh, cfg: GPTConfig):
        super().__init__(mesh=mesh)
        rules = GPT_RULES if cfg.tie_embeddings else GPT_RULES + (UNTIED_HEAD_RULE,)
        # None lets tf_keras build a replicated layout of the weight's rank.
        self._rules = {pattern + "$": None if spec is None else dtensor.Layout(list(spec), mesh)
                       for pattern, spec in rules}
        self.matched: dict[str, list[str]] = {key: [] for key in self._rules}
        self.unmatched: list[str] = []

    def __getitem__(self, path):
        # tf_keras asks with "" for the dropout layers' random-generator
        # states, which are replicated by design.
        if not path:
            return None
        for key, layout in self._rules.items():
            if re.match(key, path):
                self.matched[key].append(path)
                return layout
        self.unmatched.append(path)
        return None

    def check(self) -> None:
        """Every weight matched a rule and every rule matched a weight."""
        unused = [key for key, paths in self.matched.items() if not paths]
        if self.unmatched or unused:
            raise ConfigError(
                f"dtensor layout map: the GPT's layer names no longer match "
                f"tfbig.distribute.mesh.GPT_RULES (weights without a rule: "
                f"{self.unmatched or 'none'}; rules without a weight: {unused or 'none'}). "
                f"Update the rules so that every weight is sharded or replicated on purpose."
            )


def check_divisible(cfg: GPTConfig, model: int) -> None:
    """A ConfigError naming every GPT dimension that `model` devices cannot split evenly."""
    dims = {"model.num_heads": cfg.num_heads, "model.d_model": cfg.d_model,
            "d_ff": feed_forward_dim(cfg.d_model, cfg.d_ff)}
    bad = [f"{name}={value}" for name, value in dims.items() if value % model]
    if bad:
        raise ConfigError(
            f"distribute.mesh.model={model} must divide every dimension the GPT splits "
            f"over it, but does not divide {', '.join(bad)}; choose a mesh.model that does"
        )


@contextlib.contextmanager
def gpt_layout_scope(mesh: dtensor.Mesh, cfg: GPTConfig):
    """Build the GPT of `cfg` inside this scope to create its weights sharded on `mesh`."""
    check_divisible(cfg, mesh.dim_size(MODEL))
    policy = keras.mixed_precision.global_policy().name
    if policy != "float32":
        # Mixed precision wraps weights in AutoCastVariables, which tf_keras's
        # LayoutMap passes over: they would stay uninitialized placeholders.
        raise ConfigError(
            f"distribute.strategy=dtensor trains in float32 only (the Keras policy is "
            f"{policy!r}); set train.precision=float32"
        )
    layout_map = GPTLayoutMap(mesh, cfg)
    with layout_map.scope():
        yield layout_map
    layout_map.check()


def weight_bytes(model: keras.Model) -> dict:
    """Bytes of `model`'s weights: in total, and held by each device of the mesh.

    Read from the per-device components DTensor really keeps (`unpack`), so a
    weight sharded over `model` counts 1/model of its size on each device.
    """
    devices = dtensor.fetch_layout(model.weights[0]).mesh.num_local_devices()
    total = sharded = 0
    per_device, sharded_per_device = [0] * devices, [0] * devices
    for weight in model.weights:
        held = [part.shape.num_elements() * part.dtype.size
                for part in dtensor.unpack(weight.read_value())]
        full = weight.shape.num_elements() * weight.dtype.size
        total += full
        per_device = [a + b for a, b in zip(per_device, held)]
        if not dtensor.fetch_layout(weight).is_fully_replicated():
            sharded += full
            sharded_per_device = [a + b for a, b in zip(sharded_per_device, held)]
    return {"total": total, "per_device": per_device, "sharded_total": sharded,
            "sharded_per_device": sharded_per_device}
