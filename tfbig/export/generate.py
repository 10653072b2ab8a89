"""Text-in, text-out generation for a tfbig GPT, as one traceable tf.function.

The exported `generate` signature takes a batch of prompts (UTF-8 strings;
the tokenizer, bytes or SentencePiece, runs inside the graph: see
`tfbig.export.text_codec`) and `max_new_tokens`,
`temperature`, `top_k` and `seed` scalars, and returns the continuation of
each prompt as `text` (string) and `tokens` (int32, one row per prompt).

With the key/value cache each new token costs one position: every
attention layer keeps the keys and values of all positions so far in a
(batch, max_len, heads, head_dim) buffer and only the newest position runs
through the network. The arithmetic is the model's own layers (its
projections, `MultiHeadAttention._compute_attention`, LayerNorms, MLP), so
greedy output equals step-by-step argmax decoding of the full model.
`use_cache=False` recomputes the whole prefix per token instead; it exists to
measure what the cache saves (scripts/bench_export.py).

Prompts of different lengths share one loop: the common prefix (the
shortest prompt) is run in one pass, after which each row takes its own
prompt tokens until they run out and its sampled tokens from then on.
temperature <= 0 means greedy; top_k <= 0 means no top-k filter; sampling is
stateless, so the same seed gives the same text.
"""

from __future__ import annotations

import tensorflow as tf

from tfbig.export.text_codec import ByteCodec

BLOCK_PARTS = ("ln1", "attention", "ln2", "mlp_in", "mlp_out")


def block_layers(model, index: int) -> dict:
    """Block `index`'s sublayers by part, whether functional or one RecomputedBlock."""
    names = {layer.name for layer in model.layers}
    if f"block{index}" in names:  # model.recompute: the parts are the block's attributes
        block = model.get_layer(f"block{index}")
        return {part: getattr(block, part) for part in BLOCK_PARTS}
    return {part: model.get_layer(f"block{index}_{part}") for part in BLOCK_PARTS}


class GPTDecoder:
    """The GPT's forward pass split into prefill and one-position steps over a cache."""

    def __init__(self, model, gpt_config):
        self.max_len = gpt_config.max_len
        self.tied = gpt_config.tie_embeddings
        self.embedding = model.get_layer("token_embedding")
        self.positions = model.get_layer("position_embedding")
        self.blocks = [block_layers(model, i) for i in range(gpt_config.num_layers)]
        self.final_ln = model.get_layer("final_ln")
        self.head = model.get_layer("logits")

    def empty_cache(self, batch_size) -> list:
        attention = self.blocks[0]["attention"]
        shape = [batch_size, self.max_len, attention._num_heads, attention._key_dim]
        dtype = attention.compute_dtype
        return [(tf.zeros(shape, dtype), tf.zeros(shape, dtype)) for _ in self.blocks]

    def forward(self, tokens, start, cache):
        """Logits of the last of `tokens` (batch, T) at positions start..start+T-1.

        Their keys and values are written into `cache`, which also supplies
        those of all earlier positions. Returns (logits, new cache).
        """
        length = tf.shape(tokens)[1]
        h = self.embedding(tokens)
        positions = tf.cast(self.positions.embeddings[start:start + length], h.dtype)
        h = h + positions[None]
        # Query position start+t may attend to key positions 0..start+t.
        query_positions = start + tf.range(length)
        mask = query_positions[:, None] >= tf.range(self.max_len)[None, :]
        mask = tf.broadcast_to(mask[None], [tf.shape(tokens)[0], length, self.max_len])
        slots = _cache_slots(tf.shape(tokens)[0], length, start)
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache):
            attention = block["attention"]
            x = block["ln1"](h)
            keys = tf.tensor_scatter_nd_update(keys, slots, attention._key_dense(x))
            values = tf.tensor_scatter_nd_update(values, slots, attention._value_dense(x))
            new_cache.append((keys, values))
            context, _ = attention._compute_attention(
                attention._query_dense(x), keys, values, mask, training=False)
            h = h + attention._output_dense(context)
            h = h + _rows(block["mlp_out"], _rows(block["mlp_in"], block["ln2"](h)))
        last = self.final_ln(h[:, -1:])
        # Tied: the embedding projects back, and `logits` is a float32 cast.
        logits = self.head(self.embedding(last, reverse=True) if self.tied else last)
        return tf.cast(logits[:, 0], tf.float32), new_cache


def _cache_slots(batch, length, start):
    """The (row, position) index of every new key and value in a (batch, max_len, ...) cache:
    shape (batch, length, 2), so one scatter writes a block's keys (batch, length, ...)."""
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, length])
    positions = tf.broadcast_to(start + tf.range(length)[None, :], [batch, length])
    return tf.stack([rows, positions], axis=-1)


def _rows(dense, x):
    """`dense` applied to (batch, T, d) as to batch * T rows: the model's own layer on the
    same matmul Keras runs for 3-D inputs (tensordot reshapes to rows too), without the
    shape arithmetic tensordot repeats at every call, which a one-token step pays for."""
    shape = tf.shape(x)
    out = dense(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(out, tf.concat([shape[:-1], tf.shape(out)[-1:]], axis=0))


def length_checks(lengths, max_new_tokens, max_len: int) -> list:
    """The assertions a request must pass before any position is computed. The longest
    prompt is compared with max_len - max_new_tokens, not added to it: a huge
    max_new_tokens would wrap the int32 sum and pass."""
    return [
        tf.debugging.assert_positive(tf.reduce_min(lengths), message="generate: every prompt "
                                     "needs at least one token"),
        tf.debugging.assert_positive(max_new_tokens, message="generate: max_new_tokens "
                                     "must be at least 1"),
        tf.debugging.assert_less_equal(tf.reduce_max(lengths), max_len - max_new_tokens, message=(
            f"generate: longest prompt (tokens) + max_new_tokens must be <= max_len "
            f"{max_len}, the longest sequence of the model")),
    ]


def next_token(logits, temperature, top_k, seed, position, sampled_ids: int):
    """Sample (or argmax) one id per row from float32 logits (batch, vocab), among the
    first `sampled_ids` (the ids the codec can turn into text)."""
    logits = logits[:, :sampled_ids]

    def sample():
        scaled = logits / temperature
        k = tf.minimum(top_k, sampled_ids)
        kth = tf.math.top_k(scaled, k=tf.maximum(k, 1)).values[:, -1:]
        filtered = tf.where((k > 0) & (scaled < kth), tf.float32.min, scaled)
        seeds = tf.stack([seed, tf.cast(position, tf.int64)])
        return tf.random.stateless_categorical(filtered, 1, seed=seeds, dtype=tf.int32)[:, 0]

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return tf.cond(temperature > 0, sample, greedy)


def make_generate(model, gpt_config, *, codec=None, use_cache: bool = True):
    """The `generate` tf.function for a tfbig GPT (see the module docstring); `codec` turns
    text into token ids and back (bytes unless given)."""
    codec = ByteCodec() if codec is None else codec
    decoder = GPTDecoder(model, gpt_config)
    max_len = gpt_config.max_len

    def uncached_forward(tokens, end):
        return tf.cast(model(tokens[:, :end], training=False)[:, -1], tf.float32)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([], tf.int32, name="max_new_tokens"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k"),
        tf.TensorSpec([], tf.int64, name="seed"),
    ])
    def generate(text, max_new_tokens, temperature, top_k, seed):
        prompts, lengths = codec.encode(text)
        batch = tf.shape(prompts)[0]
        shortest = tf.reduce_min(lengths)
        end = tf.reduce_max(lengths) + max_new_tokens
        with tf.control_dependencies(length_checks(lengths, max_new_tokens, max_len)):
            tokens = tf.pad(prompts, [[0, 0], [0, max_len - tf.shape(prompts)[1]]])
        if use_cache:
            cache = decoder.empty_cache(batch)
            logits, cache = decoder.forward(tokens[:, :shortest], 0, cache)
        else:
            cache = []
            logits = uncached_forward(tokens, shortest)

        def choose(position, logits, tokens):
            sampled = next_token(logits, temperature, top_k, seed, position, codec.sampled_ids)
            chosen = tf.where(position < lengths, tokens[:, position], sampled)
            column = tf.one_hot(position, max_len, on_value=1, off_value=0, dtype=tf.int32)
            return tokens * (1 - column) + chosen[:, None] * column, chosen

        def body(position, logits, tokens, cache):
            tokens, chosen = choose(position, logits, tokens)
            if use_cache:
                logits, cache = decoder.forward(chosen[:, None], position, cache)
            else:
                logits = uncached_forward(tokens, position + 1)
            return position + 1, logits, tokens, cache

        position, logits, tokens, cache = tf.while_loop(
            lambda position, *_: position < end - 1, body,
            (shortest, logits, tokens, cache),
        )
        tokens, _ = choose(position, logits, tokens)
        # Row b's continuation is tokens[b, lengths[b] : lengths[b] + max_new_tokens].
        index = lengths[:, None] + tf.range(max_new_tokens)[None, :]
        new_tokens = tf.gather(tokens, index, batch_dims=1)
        return {"text": codec.decode(new_tokens), "tokens": new_tokens}

    return generate
