"""Tokenizers behind one small interface: bytes, or a SentencePiece model.

Everything that turns text into ids (data preparation, training on prepared
data, the exported graph, the client) goes through `Tokenizer`, so the byte
model and subword models are interchangeable. A SentencePiece model is one
serialized proto (`model_proto()`): the same bytes are written beside the
token shards, checked by sha256 when loaded, and later embedded in an
exported graph.

SentencePiece is configured for exact round trips of any UTF-8 text, code
included: no normalization (its default NFKC rewrites characters and its
whitespace handling collapses runs of spaces and drops leading ones), byte
fallback (a character the vocabulary lacks becomes its UTF-8 bytes instead of
`<unk>`), and pieces made of whitespace only (indentation is the commonest
"word" in code). Training uses one thread: the model bytes are then identical
run after run (checked by the tests), which the dataset's determinism needs.

No TensorFlow here: this module runs in data preparation's worker processes.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import os
import re
from typing import Iterable, Iterator, Sequence

import numpy as np

from tfbig.data.errors import DataError

KINDS = ("bpe", "unigram", "byte")
MODEL_FILE = "tokenizer.model"
SPEC_FILE = "spec.json"

# SentencePiece skips training sentences longer than its limit, so long
# documents are cut (at line ends where possible) into pieces of at most this
# many characters; lines stay together so pieces like "\n    " are learned.
_SENTENCE_CHARS = 4096


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned dtype holding every id: uint16 for vocabularies up to 65,536."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


class Tokenizer(abc.ABC):
    """Text <-> token ids. `eos_id` ends every document in a prepared dataset."""

    kind: str
    vocab_size: int
    eos_id: int

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of `text` (no end-of-document id added)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; special ids such as `eos_id` decode to nothing."""

    @abc.abstractmethod
    def model_proto(self) -> bytes | None:
        """The serialized SentencePiece model, or None when there is no model (bytes)."""

    @property
    def dtype(self) -> str:
        return token_dtype(self.vocab_size)

    def encode_array(self, text: str) -> np.ndarray:
        """`encode(text)` as a little-endian array of `dtype`, as the shards store ids."""
        return np.asarray(self.encode(text), dtype=np.dtype(self.dtype).newbyteorder("<"))


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes are the ids 0-255; 256 ends a document. Nothing to train or ship."""

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def model_proto(self) -> None:
        return None

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype("<u2")


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model (BPE or unigram), held as its serialized proto."""

    def __init__(self, model_proto: bytes):
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2

        self._proto = bytes(model_proto)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self._proto)
        parsed = sentencepiece_model_pb2.ModelProto.FromString(self._proto)
        self.kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(parsed.trainer_spec.model_type).lower()
        self.vocab_size = self._processor.get_piece_size()
        self.eos_id = self._processor.eos_id()
        self.special_tokens = [p.piece for p in parsed.pieces if p.type == p.USER_DEFINED]
        if self.eos_id < 0:
            raise DataError("the SentencePiece model has no end-of-sentence piece (eos_id -1); "
                            "train it with tfbig.data.tokenizer.train_tokenizer")

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(i) for i in ids])

    def model_proto(self) -> bytes:
        return self._proto


def train_tokenizer(documents: Iterable[str], *, kind: str = "bpe", vocab_size: int = 8192,
                    special_tokens: Sequence[str] = ()) -> Tokenizer:
    """A tokenizer of `kind` trained on `documents` (the byte tokenizer needs none).

    Ids: 0 `<unk>` (never produced thanks to byte fallback), 1 `<s>`, 2 `</s>`
    (the end of a document), then `special_tokens` (always encoded as one id
    each), the 256 byte pieces, and the learned pieces. Raises DataError when
    `vocab_size` does not fit the text: too small for its characters and the
    byte pieces, or larger than the pieces the text supports.
    """
    if kind not in KINDS:
        raise DataError(f"tokenizer {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "byte":
        if special_tokens:
            raise DataError("the byte tokenizer has no special tokens; use --tokenizer bpe or unigram")
        return ByteTokenizer()
    import sentencepiece

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=_sentences(documents), model_writer=model, model_type=kind,
            vocab_size=vocab_size, user_defined_symbols=list(special_tokens),
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=False,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=4 * _SENTENCE_CHARS,
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(_vocab_message(str(e), vocab_size)) from None
    return SentencePieceTokenizer(model.getvalue())


def _sentences(documents: Iterable[str]) -> Iterator[str]:
    """Documents cut into SentencePiece training sentences of at most `_SENTENCE_CHARS`."""
    for document in documents:
        piece = ""
        for line in document.splitlines(keepends=True):
            if piece and len(piece) + len(line) > _SENTENCE_CHARS:
                yield piece
                piece = ""
            piece += line
            while len(piece) > _SENTENCE_CHARS:  # a line longer than a sentence
                yield piece[:_SENTENCE_CHARS]
                piece = piece[_SENTENCE_CHARS:]
        if piece:
            yield piece


def _vocab_message(error: str, vocab_size: int) -> str:
    """SentencePiece's vocabulary-size complaint, said for a tfbig user."""
    too_high = re.search(r"value <= (\d+)", error)
    if too_high:
        return (f"vocabulary size {vocab_size} is larger than the text supports: its tokenizer sample "
                f"yields at most {too_high.group(1)} pieces; lower --vocab-size or give more text")
    too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", error)
    if too_low:
        return (f"vocabulary size {vocab_size} is too small: the text's characters, the 256 byte "
                f"pieces and the special tokens need at least {too_low.group(2)}; raise --vocab-size")
    return f"training the tokenizer failed: {error}"


def load_tokenizer(dataset_dir: str) -> Tokenizer:
    """The tokenizer of a prepared dataset, checked against the sha256 in its spec.json."""
    spec_path = os.path.join(dataset_dir, SPEC_FILE)
    try:
        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)["tokenizer"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{dataset_dir!r} is not a prepared dataset (tfbig data prepare): "
                        f"cannot read the tokenizer from {spec_path}: {e}") from None
    if spec["kind"] == "byte":
        return ByteTokenizer()
    model_path = os.path.join(dataset_dir, spec["file"])
    try:
        with open(model_path, "rb") as f:
            proto = f.read()
    except OSError as e:
        raise DataError(f"the dataset's tokenizer {model_path} cannot be read: {e}") from None
    if hashlib.sha256(proto).hexdigest() != spec["sha256"]:
        raise DataError(f"{model_path} is not the tokenizer the dataset was made with (its sha256 "
                        f"differs from spec.json's); prepare the dataset again")
    return SentencePieceTokenizer(proto)
