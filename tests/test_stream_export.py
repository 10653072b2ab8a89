"""The stepwise `generate` a GPT's SavedModel carries (tfbig.export.stream): its pieces join to
`generate`'s text without splitting a character, and its tokens equal `generate`'s, greedy and
sampled. Fast: an untrained model and a SentencePiece model trained on a few kB."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tfbig.data.tokenizer import train_tokenizer
from tfbig.export.generate import make_generate
from tfbig.export.errors import ParityError
from tfbig.export.stream import check_stream, make_stream_functions, run_stream, stream_piece
from tfbig.export.text_codec import ByteCodec, SentencePieceCodec

from corpus import TRICKY, stdlib_files
from serving_models import untrained_gpt

NON_ASCII = "naïve café — 日本語 🎉 ∑ ok"


@pytest.fixture(scope="module")
def sentencepiece():
    """Trained without NON_ASCII's rarer characters, so byte_fallback spells them in bytes."""
    with open(stdlib_files(1)[0], encoding="utf-8") as f:
        text = f.read()[:20_000]
    tokenizer = train_tokenizer([text, TRICKY], kind="bpe", vocab_size=400)
    return tokenizer, SentencePieceCodec(tokenizer.model_proto(), tokenizer.vocab_size)


def streamed_pieces(codec, tokens) -> list[bytes]:
    """`stream_piece` after each token, the last step flushing, as the stream functions call it."""
    pieces, sent = [], tf.constant(0)
    for count in range(1, len(tokens) + 1):
        piece, sent = stream_piece(codec, tf.constant(tokens[:count], tf.int32), sent,
                                   tf.constant(count == len(tokens)))
        pieces.append(piece.numpy())
    return pieces


def test_sentencepiece_pieces_join_to_the_text_and_never_split_a_character(sentencepiece):
    tokenizer, codec = sentencepiece
    tokens = tokenizer.encode(NON_ASCII)
    assert len(tokens) > len(NON_ASCII) // 2  # byte pieces: more tokens than characters' worth
    pieces = streamed_pieces(codec, tokens)
    assert b"".join(pieces).decode("utf-8") == tokenizer.decode(tokens) == NON_ASCII
    assert b"" in pieces  # bytes of one character waited for each other
    for piece in pieces:
        piece.decode("utf-8")  # strict: each piece is whole characters


def test_an_unfinished_character_is_flushed_by_the_last_step(sentencepiece):
    tokenizer, codec = sentencepiece
    tokens = tokenizer.encode("ok 🎉")[:-1]  # the emoji's last byte never comes
    pieces = streamed_pieces(codec, tokens)
    assert pieces[-2] == b"" and b"".join(pieces) == codec.decode(tf.constant([tokens]))[0].numpy()
    assert b"".join(pieces).endswith("\ufffd".encode())


def test_byte_pieces_are_the_tokens_bytes():
    tokens = list("é中".encode())
    assert streamed_pieces(ByteCodec(), tokens) == [bytes([t]) for t in tokens]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return untrained_gpt(tmp_path_factory.mktemp("gpt") / "run", max_len=48)


def generated(gpt, prompt: bytes, n: int, **sampling):
    generate = make_generate(gpt.model, gpt.config.model)
    params = {"temperature": 0.0, "top_k": 0, "seed": 0, **sampling}
    out = generate(tf.constant([prompt]), max_new_tokens=tf.constant(n),
                   temperature=tf.constant(float(params["temperature"])), top_k=tf.constant(params["top_k"]),
                   seed=tf.constant(params["seed"], tf.int64))
    return out["tokens"].numpy()[0].tolist(), out["text"].numpy()[0]


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 3}, {"temperature": 0.7, "top_k": 5, "seed": 9}])
def test_a_stream_equals_generate_greedy_and_seeded(gpt, sampling):
    functions = types.SimpleNamespace(**make_stream_functions(gpt.model, gpt.config.model, codec=ByteCodec()))
    for prompt in (b"x", NON_ASCII.encode()):
        tokens, pieces = run_stream(functions, prompt, max_new_tokens=9, **sampling)
        assert (tokens, b"".join(pieces)) == generated(gpt, prompt, 9, **sampling)


@pytest.mark.parametrize("prompt, n, message", [
    (b"x" * 40, 9, "<= max_len 48"),
    (b"x", 2**31 - 1, "<= max_len 48"),  # not wrapped around int32 into a length that fits
    (b"", 3, "at least one token"),
    (b"x", 0, "max_new_tokens must be at least 1"),
])
def test_impossible_streams_fail_at_the_start(gpt, prompt, n, message):
    functions = types.SimpleNamespace(**make_stream_functions(gpt.model, gpt.config.model, codec=ByteCodec()))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        run_stream(functions, prompt, max_new_tokens=n)


def test_a_finished_stream_takes_no_further_step(gpt):
    functions = make_stream_functions(gpt.model, gpt.config.model, codec=ByteCodec())
    out = functions["generate_start"](tf.constant(b"x"), tf.constant(1), tf.constant(0.0), tf.constant(0),
                                      tf.constant(0, tf.int64))
    assert bool(out["done"]) and np.shape(out["state"]["tokens"]) == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the stream is done"):
        functions["generate_next"](out["state"])


def test_the_export_check_refuses_a_stream_that_is_not_generates(gpt, tmp_path):
    sample = {"text": np.array([b"x", NON_ASCII.encode()], dtype=object), "max_new_tokens": np.array(6, np.int32),
              "temperature": np.array(0.0, np.float32), "top_k": np.array(0, np.int32), "seed": np.array(0, np.int64)}
    generate = {"generate": make_generate(gpt.model, gpt.config.model)}
    same = types.SimpleNamespace(signatures=generate, **make_stream_functions(gpt.model, gpt.config.model,
                                                                              codec=ByteCodec()))
    assert check_stream(same, sample) == {"max_abs_error": 0.0}
    other = untrained_gpt(tmp_path / "other", max_len=48)  # other random weights
    differs = types.SimpleNamespace(signatures=generate, **make_stream_functions(other.model, other.config.model,
                                                                                 codec=ByteCodec()))
    with pytest.raises(ParityError, match=r"generate_start/generate_next: prompt 0 streams tokens \["):
        check_stream(differs, sample)
