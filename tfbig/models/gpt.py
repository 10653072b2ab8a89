"""Decoder-only language model in the GPT-2 layout.

Token embedding + learned positions, `num_layers` pre-LN causal transformer
blocks, a final LayerNorm, and a vocabulary head that is either the token
embedding transposed (`tie_embeddings`, GPT-2's choice) or its own Dense.
The two non-stock layers this needs are in `tfbig.models.layers`; why they
exist is explained there.
"""

from __future__ import annotations

from tf_keras import layers

from tfbig.config import ConfigError, GPTConfig
from tfbig.data.spec import DataSpec
from tfbig.models.layers import ReversibleEmbedding
from tfbig.models.transformer import RecomputedBlock, embed_with_positions, transformer_block


def vocab_size(cfg: GPTConfig, spec: DataSpec) -> int:
    """The GPT's vocabulary: the data's (a language model's spec.num_classes).

    The tokenizer that made the data fixes the vocabulary, so the config need
    not repeat it; where it does (`model.vocab_size` > 0) it must agree, since
    ids past the table would fail at run time and a larger table only trains
    rows no token ever selects.
    """
    if spec.task != "lm":
        raise ConfigError(f"model.name: the gpt model trains on language-model data; got a "
                         f"{spec.task!r} data set")
    if cfg.vocab_size and cfg.vocab_size != spec.num_classes:
        raise ConfigError(
            f"model.vocab_size: {cfg.vocab_size} differs from the data's vocabulary of "
            f"{spec.num_classes} tokens; set model.vocab_size to 0 (the data's) or to "
            f"{spec.num_classes}")
    return spec.num_classes


def build_gpt(cfg: GPTConfig, spec: DataSpec, inputs):
    """Logits (batch, seq, vocab) in float32 for int32 token ids (batch, seq)."""
    vocab = vocab_size(cfg, spec)
    if spec.input_shape[0] > cfg.max_len:
        raise ConfigError(f"model.max_len={cfg.max_len} is shorter than the input windows "
                         f"({spec.input_shape[0]} tokens); raise model.max_len")
    embedding = ReversibleEmbedding(
        vocab, cfg.d_model, name="token_embedding",
        embeddings_initializer="random_normal",
    )
    h = embed_with_positions(inputs, embedding, cfg.max_len, cfg.dropout)
    for i in range(cfg.num_layers):
        if cfg.recompute:
            h = RecomputedBlock(d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff,
                                causal=True, epsilon=cfg.layer_norm_epsilon,
                                name=f"block{i}")(h)
            continue
        h = transformer_block(h, d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff,
                              dropout=cfg.dropout, causal=True, epsilon=cfg.layer_norm_epsilon,
                              name=f"block{i}")
    h = layers.LayerNormalization(epsilon=cfg.layer_norm_epsilon, name="final_ln")(h)
    if cfg.tie_embeddings:
        h = embedding(h, reverse=True)
        # The logits leave the model in float32 whatever the compute policy.
        return layers.Activation("linear", dtype="float32", name="logits")(h)
    return layers.Dense(vocab, use_bias=False, dtype="float32", name="logits")(h)
