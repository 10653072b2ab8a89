"""`generate` one token per call, for a server that streams text as it is produced.

A GPT's SavedModel carries two tf.functions beside its signatures:

    out = loaded.generate_start(text=..., max_new_tokens=..., temperature=..., top_k=..., seed=...)
    while not out["done"]:
        out = loaded.generate_next(out["state"])

Each returns the chosen `token` (int32), its `piece` of text (bytes), `done`
and the `state` to pass on: the key/value cache as explicit tensors, the
tokens so far, the position and the sampling parameters. One prompt per
stream (`text` is a scalar string): a stream is one client's request.

They are tf.function attributes, not signatures, on purpose. The stock
tensorflow_model_server ignores them, so its metadata and Predict API show
exactly the signatures they showed before; as a remote API they would be a
trap, since every call would send the whole cache (layers x 2 x max_len x
d_model floats) over the wire both ways. Plain TensorFlow loads them
(`tf.saved_model.load(path).generate_start`, after `import tensorflow_text`
for a SentencePiece model), and tfbig's embedded server streams with them.

The arithmetic is `generate`'s: the same prefill, the same one-position steps
of `GPTDecoder`, the same stateless sampling seeded by (seed, position), so a
stream's tokens equal what `generate` returns for that prompt alone, greedy or
sampled (the export checks it on the reloaded SavedModel).

The pieces join to exactly `generate`'s text. A token's own text is not its
piece: SentencePiece's byte_fallback spells a character it has no piece for as
several byte tokens, and decoding only some of them gives U+FFFD. So each
step decodes every token so far and emits what is new since the last piece,
holding it back while it ends in U+FFFD (the rest of a character may follow),
as Hugging Face's TextStreamer does; the last step emits whatever is left.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfbig.export.errors import ParityError
from tfbig.export.generate import GPTDecoder, length_checks, next_token
from tfbig.export.signatures import GENERATE, GENERATE_NEXT, GENERATE_START
from tfbig.protocol import GENERATE_INPUTS

REPLACEMENT = "\ufffd".encode()


def stream_piece(codec, tokens, sent, done):
    """The text to emit after `tokens` (all generated so far, int32 (n,)) when `sent`
    bytes of their decoding were emitted before: (piece, new sent)."""
    text = codec.decode(tokens[None])[0]
    length = tf.strings.length(text)
    unfinished = tf.strings.substr(text, tf.maximum(length - len(REPLACEMENT), 0),
                                   len(REPLACEMENT)) == REPLACEMENT
    hold = unfinished & tf.logical_not(done)
    piece = tf.where(hold, tf.constant(b""), tf.strings.substr(text, sent, length - sent))
    return piece, tf.where(hold, sent, length)


def make_stream_functions(model, gpt_config, *, codec) -> dict:
    """{"generate_start": ..., "generate_next": ...} for a tfbig GPT (see the module docstring)."""
    decoder = GPTDecoder(model, gpt_config)
    max_len = gpt_config.max_len
    cache_spec = [(tf.TensorSpec(keys.shape, keys.dtype), tf.TensorSpec(values.shape, values.dtype))
                  for keys, values in decoder.empty_cache(1)]
    state_spec = {
        "cache": cache_spec,
        "tokens": tf.TensorSpec([None], tf.int32),  # generated so far
        "position": tf.TensorSpec([], tf.int32),  # of the last of them
        "sent": tf.TensorSpec([], tf.int32),  # bytes of their text already emitted
        "max_new_tokens": tf.TensorSpec([], tf.int32),
        "temperature": tf.TensorSpec([], tf.float32),
        "top_k": tf.TensorSpec([], tf.int32),
        "seed": tf.TensorSpec([], tf.int64),
    }

    def choose(logits, position, state):
        token = next_token(logits, state["temperature"], state["top_k"], state["seed"], position,
                           codec.sampled_ids)[0]
        tokens = tf.concat([state["tokens"], token[None]], axis=0)
        done = tf.size(tokens) >= state["max_new_tokens"]
        piece, sent = stream_piece(codec, tokens, state["sent"], done)
        return {"token": token, "piece": piece, "done": done,
                "state": {**state, "tokens": tokens, "position": position, "sent": sent}}

    @tf.function(input_signature=[tf.TensorSpec([], dtype, name=name) for name, dtype in zip(
        GENERATE_INPUTS, (tf.string, tf.int32, tf.float32, tf.int32, tf.int64))])
    def generate_start(text, max_new_tokens, temperature, top_k, seed):
        prompt, lengths = codec.encode(text[None])
        with tf.control_dependencies(length_checks(lengths, max_new_tokens, max_len)):
            prompt = tf.identity(prompt)
        logits, cache = decoder.prefill(prompt)
        state = {"cache": cache, "tokens": tf.zeros([0], tf.int32), "sent": tf.constant(0),
                 "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k,
                 "seed": seed}
        return choose(logits, lengths[0], state)

    @tf.function(input_signature=[state_spec])
    def generate_next(state):
        check = tf.debugging.assert_less(tf.size(state["tokens"]), state["max_new_tokens"], message=(
            "generate_next: the stream is done (it has max_new_tokens tokens)"))
        with tf.control_dependencies([check]):
            last = tf.identity(state["tokens"][-1:])
        logits, cache = decoder.step(last, state["position"], state["cache"])
        return choose(logits, state["position"] + 1, {**state, "cache": cache})

    return {GENERATE_START: generate_start, GENERATE_NEXT: generate_next}


def run_stream(module, text: bytes, *, max_new_tokens: int, temperature: float = 0.0,
               top_k: int = 0, seed: int = 0) -> tuple[list[int], list[bytes]]:
    """A whole stream through `module`'s two functions (a loaded SavedModel): (token ids,
    pieces). What the export checks, and tests compare, against `generate`."""
    start, step = getattr(module, GENERATE_START), getattr(module, GENERATE_NEXT)
    out = start(text=tf.constant(text), max_new_tokens=tf.constant(max_new_tokens, tf.int32),
                temperature=tf.constant(temperature, tf.float32), top_k=tf.constant(top_k, tf.int32),
                seed=tf.constant(seed, tf.int64))
    tokens, pieces = [int(out["token"])], [out["piece"].numpy()]
    while not bool(out["done"]):
        out = step(out["state"])
        tokens.append(int(out["token"]))
        pieces.append(out["piece"].numpy())
    return tokens, pieces


def check_stream(loaded, sample: dict[str, np.ndarray]) -> dict:
    """Stream each prompt of a `generate` sample through the reloaded SavedModel and compare
    with its `generate` signature on that prompt alone: tokens and text, byte for byte."""
    generate = loaded.signatures[GENERATE]
    params = {name: value for name, value in sample.items() if name != "text"}
    for index, prompt in enumerate(sample["text"]):
        expected = generate(text=tf.constant([prompt]), **{k: tf.constant(v) for k, v in params.items()})
        tokens, pieces = run_stream(loaded, prompt, **{k: v.item() for k, v in params.items()})
        want_tokens, want_text = expected["tokens"].numpy()[0].tolist(), expected["text"].numpy()[0]
        if tokens != want_tokens or b"".join(pieces) != want_text:
            raise ParityError(
                f"saved_model functions {GENERATE_START}/{GENERATE_NEXT}: prompt {index} streams "
                f"tokens {tokens} and text {b''.join(pieces)!r}, but generate returns "
                f"{want_tokens} and {want_text!r}")
    return {"max_abs_error": 0.0}  # as check_parity reports an exact match
