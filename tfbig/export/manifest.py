"""`assets.extra/tfbig_manifest.json`: what a version is and how to check it.

Records the tfbig version, the resolved config, the training step and eval
metrics of the exported checkpoint, each signature's inputs and outputs, the
relative paths of the ONNX/TFLite artifacts, and the sha256 of every other
file in the version directory, so a server can refuse a corrupted or
half-copied version before loading it (`verify_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import os

from tfbig.export.versions import ASSETS_EXTRA

MANIFEST_FILE = os.path.join(ASSETS_EXTRA, "tfbig_manifest.json")
# The signature over the manifest (tfbig.export.signing): written after it, so the one
# file besides the manifest that it does not list.
SIGNATURE_FILE = os.path.join(ASSETS_EXTRA, "tfbig_manifest.sig")


def file_digests(export_dir: str) -> dict[str, str]:
    """sha256 of every file under `export_dir` except the manifest and its signature, by
    relative path."""
    digests = {}
    for root, _, files in os.walk(export_dir):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, export_dir)
            if relative not in (MANIFEST_FILE, SIGNATURE_FILE):
                digests[relative] = _sha256(path)
    return dict(sorted(digests.items()))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(export_dir: str, manifest: dict) -> str:
    """Write `manifest` plus the digests of everything already in `export_dir`."""
    path = os.path.join(export_dir, MANIFEST_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**manifest, "files": file_digests(export_dir)}, f, indent=2)
        f.write("\n")
    return path


def read_manifest(export_dir: str) -> dict | None:
    """The manifest of a version, or None for a SavedModel tfbig did not export."""
    path = os.path.join(export_dir, MANIFEST_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def verify_manifest(export_dir: str) -> list[str]:
    """Problems found comparing the files with the manifest; empty when intact.

    A version without a manifest has nothing to verify and passes, as in TF
    Serving, which serves any SavedModel.
    """
    manifest = read_manifest(export_dir)
    if manifest is None:
        return []
    expected = manifest.get("files", {})
    actual = file_digests(export_dir)
    problems = [f"{name}: missing" for name in expected if name not in actual]
    problems += [f"{name}: sha256 differs" for name in expected
                 if name in actual and actual[name] != expected[name]]
    problems += [f"{name}: not in the manifest" for name in actual if name not in expected]
    return problems
