"""Export for serving: versioned SavedModels with signatures, warmup, ONNX, TFLite.

`export_run(RUN_DIR, BASE)` writes `BASE/VERSION/` atomically and verified;
see `tfbig.export.exporter`. `verify_manifest` lets a server check a version
before loading it.

Names are imported on first use: a server reading a version's manifest or
warmup file (`tfbig.export.manifest`, `tfbig.export.warmup`) loads only
those modules, not the exporter and the training code it restores runs with.
"""

from tfbig.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "tfbig.export.errors": ("ArtifactError", "ExportError", "ParityError", "VersionWriteError"),
    "tfbig.export.exporter": ("ExportResult", "export_model", "export_run"),
    "tfbig.export.manifest": ("read_manifest", "verify_manifest"),
    "tfbig.export.restore": ("TrainedModel", "restore_run"),
    "tfbig.config.schema": ("TFLITE_VARIANTS",),
    "tfbig.export.versions": ("existing_versions", "next_version"),
})
