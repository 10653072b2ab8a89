"""How the GPT's weights are split for tensor parallelism (DTensor), beside the GPT itself.

Megatron's pairing costs one all-reduce per sub-layer: a column-parallel
matmul (output features split over the model axis) feeds a row-parallel one
(input features split the same way), so the activation between them stays
split and only the row-parallel output is summed over the axis. In the
attention the split features are whole heads (query/key/value kernels split
on their heads dimension, the output projection on its heads input); in the
MLP they are the d_ff units (mlp_in's columns, mlp_out's rows).

The token embedding is split on d_model, not on the vocabulary as Megatron
does: DTensor's gather un-shards the gathered axis, so a vocabulary-split
table would be all-gathered whole onto every device at each lookup, while a
d_model split keeps the lookup local. The tied output head then contracts over
the split d_model, a partial sum DTensor all-reduces; an untied head is split
the same way. Norms, positions and the biases added after a row-parallel
matmul are replicated: small, and needed whole on every device. Along every
other mesh axis everything is replicated (plain data parallelism).

The rules name the layers of `tfbig.models.gpt`, so they live here, as
model-parallel libraries keep a model's layout with the model; the mesh and
the strategy that use them are `tfbig.distribute`'s, which passes the name of
the axis to split over (`gpt_layout_scope(mesh, cfg, axis=...)`).
"""

from __future__ import annotations

import contextlib
import re

import tf_keras as keras
from tensorflow.experimental import dtensor

from tfbig.config import ConfigError, GPTConfig
from tfbig.models.transformer import feed_forward_dim

_U = dtensor.UNSHARDED
# Stands in the rules for the mesh axis the weights are split over.
SPLIT = "<split axis>"

# (regex over the variable paths tf_keras's LayoutMap asks about, sharding
# spec; None = replicated). For a functional model a path is the layer name,
# then the attribute path inside the layer. Every GPT weight has a rule, so a
# renamed layer is an error (see GPTLayoutMap) rather than silently replicated.
GPT_RULES = (
    (r"token_embedding\.embeddings", (_U, SPLIT)),
    # Column-parallel: kernels (d_model, heads, head_dim) and (d_model, d_ff).
    (r"block\d+_attention\._(query|key|value)_dense\.kernel", (_U, SPLIT, _U)),
    (r"block\d+_attention\._(query|key|value)_dense\.bias", (SPLIT, _U)),
    (r"block\d+_mlp_in\.kernel", (_U, SPLIT)),
    (r"block\d+_mlp_in\.bias", (SPLIT,)),
    # Row-parallel: kernels (heads, head_dim, d_model) and (d_ff, d_model).
    (r"block\d+_attention\._output_dense\.kernel", (SPLIT, _U, _U)),
    (r"block\d+_mlp_out\.kernel", (SPLIT, _U)),
    (r"block\d+_attention\._output_dense\.bias", None),
    (r"block\d+_mlp_out\.bias", None),
    (r"(block\d+_ln[12]|final_ln)\.(gamma|beta)", None),
    (r"position_embedding\.embeddings", None),
)
UNTIED_HEAD_RULE = (r"logits\.kernel", (SPLIT, _U))


class GPTLayoutMap(keras.dtensor.experimental.LayoutMap):
    """A LayoutMap over the GPT's rules that records which weights each rule took.

    tf_keras gives a path no rule matches a replicated layout without a word,
    so a renamed layer would quietly lose its sharding; `check` turns that
    into an error once the model is built.
    """

    def __init__(self, mesh: dtensor.Mesh, cfg: GPTConfig, *, axis: str):
        super().__init__(mesh=mesh)
        rules = GPT_RULES if cfg.tie_embeddings else GPT_RULES + (UNTIED_HEAD_RULE,)
        # None lets tf_keras build a replicated layout of the weight's rank.
        self._rules = {pattern + "$": None if spec is None else dtensor.Layout(
                           [axis if dim == SPLIT else dim for dim in spec], mesh)
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
                f"tfbig.models.gpt_layout.GPT_RULES (weights without a rule: "
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
def gpt_layout_scope(mesh: dtensor.Mesh, cfg: GPTConfig, *, axis: str):
    """Build the GPT of `cfg` inside this scope to create its weights split over `mesh`'s `axis`."""
    check_divisible(cfg, mesh.dim_size(axis))
    policy = keras.mixed_precision.global_policy().name
    if policy != "float32":
        # Mixed precision wraps weights in AutoCastVariables, which tf_keras's
        # LayoutMap passes over: they would stay uninitialized placeholders.
        raise ConfigError(
            f"distribute.strategy=dtensor trains in float32 only (the Keras policy is "
            f"{policy!r}); set train.precision=float32"
        )
    layout_map = GPTLayoutMap(mesh, cfg, axis=axis)
    with layout_map.scope():
        yield layout_map
    layout_map.check()
