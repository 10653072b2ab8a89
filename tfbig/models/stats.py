"""Size, FLOPs and memory of a model, from its config alone.

Nothing is allocated, so `tfbig info` answers at once for a 10B-parameter
config on a laptop. Each family walks its layers once, mirroring its builder,
and records into a `Tally`: weight shapes (the parameter count equals
`model.count_params()`; tests hold this), forward FLOPs and activation
elements kept for the backward pass, per example.

Conventions:
- A multiply-add is 2 FLOPs; training costs 3x the forward pass (backward
  needs two matmuls per forward matmul), the usual 6*N per token for LMs.
- Attention adds 2 * 2 * seq * d_model FLOPs per token and layer (QK^T and
  AV) counted over the full square, as most MFU reports do, though the causal
  half is masked.
- Activation memory is an estimate: each layer output kept for backward
  (attention scores included) at the compute precision, plus float32 logits
  and their gradient. Recomputation or fused kernels lower it.
"""

from __future__ import annotations

import dataclasses
import math

from tfbig.config import (CNNConfig, GPTConfig, LSTMConfig, MLPConfig,
                          TransformerEncoderConfig)
from tfbig.data.spec import DataSpec
from tfbig.models.gpt import vocab_size
from tfbig.models.transformer import TOKEN_VOCAB, feed_forward_dim


@dataclasses.dataclass
class Tally:
    trainable: list = dataclasses.field(default_factory=list)  # weight shapes
    frozen: list = dataclasses.field(default_factory=list)  # e.g. BatchNorm statistics
    forward_flops: float = 0.0
    activations: float = 0.0

    def dense(self, n_in: int, n_out: int, *, positions: int = 1, bias: bool = True):
        self.trainable.append((n_in, n_out))
        if bias:
            self.trainable.append((n_out,))
        self.forward_flops += 2 * n_in * n_out * positions
        self.activations += n_out * positions

    def embedding(self, vocab: int, dim: int, *, positions: int):
        self.trainable.append((vocab, dim))
        self.activations += dim * positions

    def layer_norm(self, dim: int, *, positions: int):
        self.trainable += [(dim,), (dim,)]
        self.activations += dim * positions

    def batch_norm(self, dim: int, *, positions: int):
        self.trainable += [(dim,), (dim,)]
        self.frozen += [(dim,), (dim,)]
        self.activations += dim * positions


def _size(shapes) -> int:
    return sum(math.prod(shape) for shape in shapes)


# ------------------------------------------------------------------ families


def _transformer_blocks(t: Tally, *, d: int, heads: int, d_ff: int, layers: int, seq: int):
    d_ff = feed_forward_dim(d, d_ff)
    for _ in range(layers):
        t.layer_norm(d, positions=seq)
        for _ in range(3):  # query, key, value projections
            t.dense(d, d, positions=seq)
        t.dense(d, d, positions=seq)  # attention output projection
        t.forward_flops += 4 * seq * seq * d
        t.activations += 2 * heads * seq * seq  # scores and softmax
        t.activations += 2 * d * seq  # two residual adds
        t.layer_norm(d, positions=seq)
        t.dense(d, d_ff, positions=seq)
        t.dense(d_ff, d, positions=seq)


def _gpt(cfg: GPTConfig, spec: DataSpec, t: Tally):
    seq, vocab = spec.input_shape[0], vocab_size(cfg, spec)
    t.embedding(vocab, cfg.d_model, positions=seq)
    t.embedding(cfg.max_len, cfg.d_model, positions=seq)
    _transformer_blocks(t, d=cfg.d_model, heads=cfg.num_heads, d_ff=cfg.d_ff,
                        layers=cfg.num_layers, seq=seq)
    t.layer_norm(cfg.d_model, positions=seq)
    if cfg.tie_embeddings:
        t.forward_flops += 2 * cfg.d_model * vocab * seq
    else:
        t.dense(cfg.d_model, vocab, positions=seq, bias=False)


def _transformer_encoder(cfg: TransformerEncoderConfig, spec: DataSpec, t: Tally):
    seq = spec.input_shape[0]
    if len(spec.input_shape) == 1:
        t.embedding(TOKEN_VOCAB, cfg.d_model, positions=seq)
    else:
        t.dense(spec.input_shape[1], cfg.d_model, positions=seq)
    t.embedding(cfg.max_len, cfg.d_model, positions=seq)
    _transformer_blocks(t, d=cfg.d_model, heads=cfg.num_heads, d_ff=cfg.d_ff,
                        layers=cfg.num_layers, seq=seq)
    t.layer_norm(cfg.d_model, positions=seq)
    return cfg.d_model


def _mlp(cfg: MLPConfig, spec: DataSpec, t: Tally):
    width = math.prod(spec.input_shape)
    for units in cfg.hidden_units:
        t.dense(width, units)
        width = units
    return width


def _cnn(cfg: CNNConfig, spec: DataSpec, t: Tally):
    height, width = spec.input_shape[:2]
    channels = spec.input_shape[2] if len(spec.input_shape) == 3 else 1

    def conv(c_in, c_out, kernel, h, w):
        t.trainable.append((kernel, kernel, c_in, c_out))
        t.forward_flops += 2 * kernel * kernel * c_in * c_out * h * w
        t.activations += c_out * h * w
        t.batch_norm(c_out, positions=h * w)

    conv(channels, cfg.filters[0], 3, height, width)
    channels = cfg.filters[0]
    for stage, filters in enumerate(cfg.filters):
        for block in range(cfg.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            height, width = -(-height // stride), -(-width // stride)
            if stride != 1 or channels != filters:
                conv(channels, filters, 1, height, width)
            conv(channels, filters, 3, height, width)
            conv(filters, filters, 3, height, width)
            channels = filters
    return channels


def _lstm(cfg: LSTMConfig, spec: DataSpec, t: Tally):
    steps = spec.input_shape[0]
    if len(spec.input_shape) == 1:
        t.embedding(TOKEN_VOCAB, cfg.embedding_dim, positions=steps)
        width = cfg.embedding_dim
    else:
        width = spec.input_shape[1]
    directions = 2 if cfg.bidirectional else 1
    for _ in range(cfg.num_layers):
        for _ in range(directions):
            gates = 4 * cfg.units
            t.trainable += [(width, gates), (cfg.units, gates), (gates,)]
            t.forward_flops += 2 * (width + cfg.units) * gates * steps
            t.activations += (gates + 2 * cfg.units) * steps  # gates, cell and hidden states
        width = directions * cfg.units
    return width


_CLASSIFIERS = {
    "mlp": _mlp, "cnn": _cnn, "lstm": _lstm, "transformer_encoder": _transformer_encoder,
}

# Optimizer state, in float32 copies of each trainable weight.
_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}


def model_stats(model_cfg, spec: DataSpec, *, batch_size: int, precision: str,
                optimizer: str) -> dict:
    """Parameters, training FLOPs and a memory estimate in bytes (see module doc)."""
    tally = Tally()
    if model_cfg.name == "gpt":
        _gpt(model_cfg, spec, tally)
    else:
        features = _CLASSIFIERS[model_cfg.name](model_cfg, spec, tally)
        tally.dense(features, spec.num_classes)
    trainable = _size(tally.trainable)
    parameters = trainable + _size(tally.frozen)
    activation_bytes = 2 if precision.startswith("mixed") else 4
    activations = batch_size * tally.activations * activation_bytes
    if spec.task == "lm":
        # float32 logits and their gradient, per token.
        activations += batch_size * spec.input_shape[0] * spec.num_classes * 4 * 2
    if optimizer == "adafactor":
        # Factored second moments: a row and a column vector per matrix.
        optimizer_bytes = 4 * sum(
            shape[0] + math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            for shape in tally.trainable
        )
    else:
        optimizer_bytes = 4 * _SLOTS[optimizer] * trainable
    stats = {
        "parameters": parameters,
        "trainable_parameters": trainable,
        "train_flops_per_example": 3 * tally.forward_flops,
        "weights_bytes": 4 * parameters,
        "gradients_bytes": 4 * trainable,
        "optimizer_bytes": optimizer_bytes,
        "activations_bytes": int(activations),
    }
    if spec.task == "lm":
        stats["train_flops_per_token"] = stats["train_flops_per_example"] / spec.input_shape[0]
    stats["total_bytes"] = (stats["weights_bytes"] + stats["gradients_bytes"]
                            + stats["optimizer_bytes"] + stats["activations_bytes"])
    return stats


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _flops(n: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} FLOP"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def format_stats(stats: dict) -> str:
    """A readable table of `model_stats` for the terminal."""
    rows = [("parameters", f"{_count(stats['parameters'])} ({stats['parameters']:,})")]
    if "train_flops_per_token" in stats:
        rows.append(("training FLOPs / token", _flops(stats["train_flops_per_token"])))
    rows.append(("training FLOPs / example", _flops(stats["train_flops_per_example"])))
    rows += [
        ("memory: weights", _bytes(stats["weights_bytes"])),
        ("memory: gradients", _bytes(stats["gradients_bytes"])),
        ("memory: optimizer state", _bytes(stats["optimizer_bytes"])),
        ("memory: activations", _bytes(stats["activations_bytes"])),
        ("memory: total (estimate)", _bytes(stats["total_bytes"])),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
