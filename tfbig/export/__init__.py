"""Export for serving: versioned SavedModels with signatures, warmup, ONNX, TFLite.

`export_run(RUN_DIR, BASE)` writes `BASE/VERSION/` atomically and verified;
see `tfbig.export.exporter`. `verify_manifest` lets a server check a version
before loading it.

Names are imported on first use: a server reading a version's manifest or
warmup file (`tfbig.export.manifest`, `tfbig.export.warmup`) loads only
those modules, not the exporter and the training code it restores runs with.
"""

import importlib

_EXPORTS = {
    "ArtifactError": "tfbig.export.errors",
    "ExportError": "tfbig.export.errors",
    "ParityError": "tfbig.export.errors",
    "VersionWriteError": "tfbig.export.errors",
    "ExportResult": "tfbig.export.exporter",
    "export_model": "tfbig.export.exporter",
    "export_run": "tfbig.export.exporter",
    "read_manifest": "tfbig.export.manifest",
    "verify_manifest": "tfbig.export.manifest",
    "TrainedModel": "tfbig.export.restore",
    "restore_run": "tfbig.export.restore",
    "TFLITE_VARIANTS": "tfbig.config.schema",
    "existing_versions": "tfbig.export.versions",
    "next_version": "tfbig.export.versions",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfbig.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
