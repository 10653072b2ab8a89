"""A small real corpus with no download: Python standard library source and pydoc topics.

The standard library ships with the interpreter running the tests, so this is
real code and prose (non-ASCII included) on every machine; a handwritten
document adds what the library lacks (tabs, CRLF, emoji, CJK). For tests of
the readers alone, `write_prepared` writes the pydoc topics as a prepared token
directory by hand (byte tokens), with no tokenizer to train.
"""

import glob
import gzip
import json
import os
import sysconfig

import numpy as np

BYTE_EOS = 256  # the byte tokenizer's end of document
TRICKY = ("def f(x):\r\n\treturn x  \t# tab, CRLF, trailing spaces\r\n\n\n"
          "    naïve café — 日本語 🎉 \u00a0 \u200b  end\n\t\t\n   ")


def stdlib_files(count: int, *, max_bytes: int = 40_000) -> list[str]:
    """The first `count` top-level standard library modules under `max_bytes`, in sorted order."""
    pattern = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")
    return [p for p in sorted(glob.glob(pattern)) if os.path.getsize(p) <= max_bytes][:count]


def pydoc_topics(count: int) -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)][:count]


def write_corpus(directory, *, files: int = 30, topics: int = 40, prefix: str = "") -> list[str]:
    """`files` stdlib modules, `topics` pydoc topics as .jsonl.gz and the tricky .txt in
    `directory`, each document starting with `prefix`; returns the documents, in input order."""
    os.makedirs(directory, exist_ok=True)
    documents = []
    for path in stdlib_files(files):
        with open(path, encoding="utf-8") as f:
            text = prefix + f.read()
        with open(os.path.join(directory, os.path.basename(path)), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        documents.append(text)
    texts = [prefix + t for t in pydoc_topics(topics)]
    with gzip.open(os.path.join(directory, "topics.jsonl.gz"), "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    with open(os.path.join(directory, "tricky.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(prefix + TRICKY)
    return documents + texts + [prefix + TRICKY]


def write_prepared(directory, shards_per_split=(("train", 3), ("eval", 1))) -> dict:
    """Byte tokens of the pydoc topics in the prepared layout, documents ended by BYTE_EOS."""
    from pydoc_data.topics import topics

    documents = [topics[key].encode("utf-8") for key in sorted(topics)][:120]
    splits, start = {}, 0
    for split, count in shards_per_split:
        os.makedirs(os.path.join(directory, split), exist_ok=True)
        shards = []
        for index in range(count):
            docs = documents[start:start + 10]
            start += 10
            tokens = np.concatenate([np.append(np.frombuffer(d, np.uint8).astype(np.uint16), BYTE_EOS) for d in docs])
            name = f"{split}/shard-{index:05d}.bin"
            tokens.astype("<u2").tofile(os.path.join(directory, name))
            shards.append({"file": name, "documents": len(docs), "tokens": int(tokens.size),
                           "bytes": sum(map(len, docs)), "sha256": ""})
        splits[split] = {"documents": sum(s["documents"] for s in shards),
                         "tokens": sum(s["tokens"] for s in shards),
                         "bytes": sum(s["bytes"] for s in shards), "shards": shards}
    spec = {"format": "tfbig-tokens/1", "dtype": "uint16", "splits": splits,
            "tokenizer": {"kind": "byte", "vocab_size": 257, "eos_id": BYTE_EOS, "file": None, "sha256": None,
                          "special_tokens": []}}
    with open(os.path.join(directory, "spec.json"), "w") as f:
        json.dump(spec, f)
    return spec


def shard_windows(directory, shards, seq_len: int) -> list[bytes]:
    """Every window of these shards, read straight from their files."""
    out = []
    for shard in shards:
        tokens = np.fromfile(os.path.join(directory, shard["file"]), "<u2").astype(np.int32)
        out += [tokens[i * seq_len:(i + 1) * seq_len + 1].tobytes() for i in range((shard["tokens"] - 1) // seq_len)]
    return out
