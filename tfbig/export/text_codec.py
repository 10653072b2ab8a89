"""The tokenizer inside an exported graph: strings in, token ids, strings out.

The `generate` signature takes and returns text, so a served language model
needs no tokenizer on the client. Byte models turn text into its bytes with
plain TensorFlow ops. SentencePiece models carry their model proto inside the
graph and run it with TensorFlow Text's SentencepieceTokenizer, whose ops are
linked into the stock `tensorflow_model_server`; loading such a SavedModel in
Python needs `import tensorflow_text` first (the embedded server does it).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfbig.models.transformer import TOKEN_VOCAB

# Byte value -> one-byte string, to turn token ids back into text in-graph.
_BYTE_STRINGS = [bytes([i]) for i in range(TOKEN_VOCAB)]


class ByteCodec(tf.Module):
    """Bytes are the tokens; ids past 255 (a prepared set's end-of-document) are never sampled."""

    kind = "byte"
    sampled_ids = TOKEN_VOCAB

    def encode(self, text: tf.Tensor):
        """(batch,) strings -> int32 ids (batch, longest) zero-padded, and lengths."""
        pieces = tf.strings.bytes_split(text)
        ids = tf.cast(tf.io.decode_raw(pieces.flat_values, tf.uint8), tf.int32)
        ragged = pieces.with_flat_values(tf.reshape(ids, [-1]))
        return ragged.to_tensor(0), tf.cast(ragged.row_lengths(), tf.int32)

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        """int32 ids (batch, n) -> (batch,) strings."""
        return tf.strings.reduce_join(tf.gather(tf.constant(_BYTE_STRINGS), ids), axis=-1)

    def prompt(self, ids: np.ndarray) -> bytes:
        """Token ids from the data as a prompt string (for warmup and parity samples)."""
        return bytes(np.asarray(ids).astype(np.uint8))


class SentencePieceCodec(tf.Module):
    """A SentencePiece model (its serialized proto) run by TensorFlow Text."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, vocab_size: int):
        super().__init__()
        import tensorflow_text  # registers the SentencePiece ops

        self.tokenizer = tensorflow_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)
        self.sampled_ids = vocab_size
        self._model_proto = model_proto

    def encode(self, text: tf.Tensor):
        ragged = self.tokenizer.tokenize(text)
        return ragged.to_tensor(0), tf.cast(ragged.row_lengths(), tf.int32)

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        return self.tokenizer.detokenize(ids)

    def prompt(self, ids: np.ndarray) -> bytes:
        return self.decode(tf.constant(np.asarray(ids, np.int32)[None]))[0].numpy()

    def model_proto(self) -> bytes:
        return self._model_proto


def codec_for(data_config) -> ByteCodec | SentencePieceCodec:
    """The codec of the data a model was trained on: a prepared directory's tokenizer, else bytes."""
    if data_config.name != "tokens":
        return ByteCodec()
    from tfbig.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(data_config.paths[0])
    proto = tokenizer.model_proto()
    return ByteCodec() if proto is None else SentencePieceCodec(proto, tokenizer.vocab_size)
