"""A small real corpus with no download: Python standard library source and pydoc topics.

The standard library ships with the interpreter running the tests, so this is
real code and prose (non-ASCII included) on every machine; a handwritten
document adds what the library lacks (tabs, CRLF, emoji, CJK).
"""

import glob
import gzip
import json
import os
import sysconfig

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
