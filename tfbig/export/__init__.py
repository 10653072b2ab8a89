"""Export for serving: versioned SavedModels with signatures, warmup, ONNX, TFLite.

`export_run(RUN_DIR, BASE)` writes `BASE/VERSION/` atomically and verified;
see `tfbig.export.exporter`. `verify_manifest` lets a server check a version
before loading it.
"""

from tfbig.export.errors import ArtifactError, ExportError, ParityError, VersionWriteError
from tfbig.export.exporter import ExportResult, export_model, export_run
from tfbig.export.manifest import read_manifest, verify_manifest
from tfbig.export.restore import TrainedModel, restore_run
from tfbig.config.schema import TFLITE_VARIANTS
from tfbig.export.versions import existing_versions, next_version

__all__ = [
    "ArtifactError", "ExportError", "ParityError", "VersionWriteError", "ExportResult", "export_model",
    "export_run",
    "read_manifest", "verify_manifest", "TrainedModel", "restore_run", "TFLITE_VARIANTS",
    "existing_versions", "next_version",
]
