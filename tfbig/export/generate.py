"""Text-in, text-out generation for a tfbig GPT, as one traceable tf.function.

The exported `generate` signature takes a batch of prompts (UTF-8 strings;
the tokenizer, bytes or SentencePiece, runs inside the graph: see
`tfbig.export.text_codec`) and `max_new_tokens`,
`temperature`, `top_k` and `seed` scalars, and returns the continuation of
each prompt as `text` (string) and `tokens` (int32, one row per prompt).

With the key/value cache each new token costs one position: every
attention layer keeps the keys and values of all positions so far in a
(batch, heads, max_len, head_dim) buffer and only the newest position runs
through the network. The prompt is prefilled by the model's own layers
(projections, `MultiHeadAttention._compute_attention`, LayerNorms, MLP); a
step does the same layers' arithmetic on one row per prompt with their own
weights, so greedy output equals step-by-step argmax decoding of the full
model (to float rounding, which the tests compare on trained models).
`use_cache=False` recomputes the whole prefix per token instead; it exists to
measure what the cache saves (scripts/bench_export.py, scripts/bench_lm.py).

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
    """The GPT's forward pass split into a prefill of the prompt and one-token steps over a
    key/value cache of shape (batch, heads, max_len, head_dim) per block and kind."""

    def __init__(self, model, gpt_config):
        self.max_len = gpt_config.max_len
        self.tied = gpt_config.tie_embeddings
        self.embedding = model.get_layer("token_embedding")
        self.positions = model.get_layer("position_embedding")
        self.blocks = [block_layers(model, i) for i in range(gpt_config.num_layers)]
        self.final_ln = model.get_layer("final_ln")
        self.head = model.get_layer("logits")
        attention = self.blocks[0]["attention"]
        self.heads, self.head_dim = attention._num_heads, attention._key_dim
        self.dtype = tf.as_dtype(attention.compute_dtype)

    def empty_cache(self, batch_size) -> list:
        shape = [batch_size, self.heads, self.max_len, self.head_dim]
        return [(tf.zeros(shape, self.dtype), tf.zeros(shape, self.dtype)) for _ in self.blocks]

    def prefill(self, tokens):
        """Logits (batch, vocab) after `tokens` (batch, T) from position 0, and the cache
        holding their keys and values. The model's own layers, on the whole prompt at once."""
        length = tf.shape(tokens)[1]
        h = self.embedding(tokens)
        h = h + tf.cast(self.positions.embeddings[:length], h.dtype)[None]
        mask = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)[None]
        pad = [[0, 0], [0, 0], [0, self.max_len - length], [0, 0]]
        cache = []
        for block in self.blocks:
            attention = block["attention"]
            x = block["ln1"](h)
            keys, values = attention._key_dense(x), attention._value_dense(x)
            cache.append(tuple(tf.pad(tf.transpose(t, [0, 2, 1, 3]), pad) for t in (keys, values)))
            context, _ = attention._compute_attention(
                attention._query_dense(x), keys, values, mask, training=False)
            h = h + attention._output_dense(context)
            h = h + block["mlp_out"](block["mlp_in"](block["ln2"](h)))
        last = self.final_ln(h[:, -1:])[:, 0]
        return self._logits(last), cache

    def step(self, ids, position, cache):
        """Logits (batch, vocab) for one token per row, `ids` (batch,), at `position`, and
        the cache with its keys and values written in.

        Each layer's arithmetic done on one row: a decoding step is bound by
        reading the weights, and the Keras layers' shape handling for 3-D
        inputs costs as many graph ops again, which a step pays each token.
        """
        batch = tf.shape(ids)[0]
        h = tf.cast(tf.gather(self.embedding.embeddings, ids), self.dtype)
        h = h + tf.cast(self.positions.embeddings[position], self.dtype)
        visible = tf.range(self.max_len) <= position  # the key positions this token sees
        rows = tf.range(batch * self.heads)
        slots = tf.stack([rows // self.heads, rows % self.heads,
                          tf.fill([batch * self.heads], position)], axis=1)
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache):
            attention = block["attention"]
            x = _norm(block["ln1"], h)
            query = _project(attention._query_dense, x) * (1.0 / float(self.head_dim) ** 0.5)
            keys = tf.tensor_scatter_nd_update(
                keys, slots, tf.reshape(_project(attention._key_dense, x), [-1, self.head_dim]))
            values = tf.tensor_scatter_nd_update(
                values, slots, tf.reshape(_project(attention._value_dense, x), [-1, self.head_dim]))
            new_cache.append((keys, values))
            scores = tf.matmul(tf.reshape(query, [batch, self.heads, 1, self.head_dim]), keys,
                               transpose_b=True)
            weights = tf.nn.softmax(tf.where(visible, scores, scores.dtype.min))
            context = tf.reshape(tf.matmul(weights, values), [batch, self.heads * self.head_dim])
            h = h + _project(attention._output_dense, context)
            h = h + _project(block["mlp_out"], _project(block["mlp_in"], _norm(block["ln2"], h)))
        return self._logits(_norm(self.final_ln, h)), new_cache

    def _logits(self, last):
        """float32 logits of final-LayerNorm rows (batch, d_model). Tied: the embedding
        projects back, and `logits` is a float32 cast."""
        logits = self.head(self.embedding(last, reverse=True) if self.tied else last)
        return tf.cast(logits, tf.float32)


def _norm(layer, x):
    """A LayerNormalization layer's arithmetic on rows, statistics in float32 as Keras keeps
    them under a float16 policy."""
    rows = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(rows, [-1], keepdims=True)
    return tf.cast(tf.nn.batch_normalization(rows, mean, variance, layer.beta, layer.gamma,
                                             layer.epsilon), x.dtype)


def _project(layer, rows):
    """A Dense or EinsumDense layer on rows (batch, inputs): its kernel as one matrix (the
    attention projections' (d_model, heads, head_dim) and (heads, head_dim, d_model) are
    reshaped, not copied), its bias and activation."""
    kernel = layer.kernel if layer.kernel.shape.rank == 2 else tf.reshape(layer.kernel, [rows.shape[-1], -1])
    out = tf.matmul(rows, tf.cast(kernel, rows.dtype))
    if getattr(layer, "bias", None) is not None:
        bias = layer.bias if layer.bias.shape.rank == 1 else tf.reshape(layer.bias, [-1])
        out = tf.nn.bias_add(out, tf.cast(bias, rows.dtype))  # Grappler fuses MatMul + BiasAdd
    activation = getattr(layer, "activation", None)
    return activation(out) if activation is not None else out


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
        shortest = tf.reduce_min(lengths)
        end = tf.reduce_max(lengths) + max_new_tokens
        with tf.control_dependencies(length_checks(lengths, max_new_tokens, max_len)):
            tokens = tf.pad(prompts, [[0, 0], [0, max_len - tf.shape(prompts)[1]]])
        if use_cache:
            logits, cache = decoder.prefill(tokens[:, :shortest])
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
                logits, cache = decoder.step(chosen, position, cache)
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
