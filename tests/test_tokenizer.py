"""Tokenizers round-trip real text exactly and train reproducibly (no TensorFlow involved)."""

import pytest

from tfbig.data.errors import DataError
from tfbig.data.tokenizer import ByteTokenizer, SentencePieceTokenizer, train_tokenizer

from corpus import TRICKY, pydoc_topics, stdlib_files

SPECIAL = "<|sep|>"


def read(paths):
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            texts.append(f.read())
    return texts


@pytest.fixture(scope="module")
def texts():
    """Real code and prose (~400 kB, non-ASCII included) and the handwritten tricky text."""
    return read(stdlib_files(20)) + pydoc_topics(40) + [TRICKY]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def trained(request, texts):
    # Training sees part of the text; the round trip covers text it never saw.
    return train_tokenizer(texts[:12], kind=request.param, vocab_size=500, special_tokens=[SPECIAL])


@pytest.mark.slow
def test_sentencepiece_round_trips_every_text_exactly(trained, texts):
    assert trained.kind in ("bpe", "unigram") and trained.vocab_size == 500
    unseen = "Ωμέγα ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x01\x7f \r \t\t  x" + SPECIAL
    for text in texts + [unseen, "", " ", "\n\n\n"]:
        ids = trained.encode(text)
        assert trained.decode(ids) == text
        assert all(0 <= i < trained.vocab_size for i in ids)
    assert 0 not in trained.encode(unseen)  # byte fallback: nothing is <unk>


def test_sentencepiece_keeps_whitespace_and_special_tokens(trained):
    assert trained.eos_id == 2 and trained.special_tokens == [SPECIAL]
    (special,) = trained.encode(SPECIAL)
    assert trained.decode(trained.encode(f"a{SPECIAL}b")) == f"a{SPECIAL}b"
    assert special in trained.encode(f"a{SPECIAL}b")
    assert trained.decode([trained.eos_id]) == ""  # the end of a document adds no text
    # No normalization: leading, repeated and full-width characters survive as they are.
    for text in ["   indented", "ＡＢＣ ①", "e\u0301 vs \u00e9"]:
        assert trained.decode(trained.encode(text)) == text
    # Indentation is learned as whitespace-only pieces.
    assert len(trained.encode(" " * 8)) < 8


@pytest.mark.slow
def test_training_is_reproducible_to_the_byte(trained, texts):
    again = train_tokenizer(texts[:12], kind=trained.kind, vocab_size=500, special_tokens=[SPECIAL])
    assert again.model_proto() == trained.model_proto()
    reloaded = SentencePieceTokenizer(trained.model_proto())
    assert (reloaded.kind, reloaded.vocab_size, reloaded.eos_id) == (trained.kind, 500, 2)


def test_byte_tokenizer():
    tokenizer = train_tokenizer(["ignored"], kind="byte")
    assert isinstance(tokenizer, ByteTokenizer) and tokenizer.model_proto() is None
    assert (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.dtype) == (257, 256, "uint16")
    assert tokenizer.encode("é") == [0xC3, 0xA9]
    assert tokenizer.decode(tokenizer.encode(TRICKY) + [256]) == TRICKY
    assert tokenizer.encode_array(TRICKY).tolist() == tokenizer.encode(TRICKY)


@pytest.mark.parametrize("vocab_size, message", [
    (100, "vocabulary size 100 is too small: .* need at least \\d+; raise --vocab-size"),
    (50_000, "vocabulary size 50000 is larger than the text supports: .* at most \\d+ pieces"),
])
def test_a_vocabulary_that_does_not_fit_the_text_is_one_clear_error(texts, vocab_size, message):
    with pytest.raises(DataError, match=message):
        train_tokenizer(texts[:2], kind="bpe", vocab_size=vocab_size)
