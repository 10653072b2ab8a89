"""The parts of an embedded server, built in the order they depend on each other.

The signature runner needs nothing; the model manager needs the runner (to
replay a version's warmup records before it is AVAILABLE) and the metrics (to
count batches); the serving core needs the manager (to find versions) and the
runner; the request logger reads the manager's current config. Building them
here, each from what it needs, leaves no part holding a reference back to the
server, and `EmbeddedServer` only wires the built parts to its listeners.
"""

from __future__ import annotations

import dataclasses

from tfbig.export.signing import load_public_key
from tfbig.serving.config_files import ServerFiles
from tfbig.serving.options import ServeOptions
from tfbig.serving.server import auth
from tfbig.serving.server.core import ServingCore
from tfbig.serving.server.health import ServerHealth
from tfbig.serving.server.metrics import ServerMetrics
from tfbig.serving.server.models import ModelManager
from tfbig.serving.server.request_logger import RequestLogger
from tfbig.serving.server.runner import SignatureRunner


@dataclasses.dataclass(frozen=True)
class ServingParts:
    files: ServerFiles
    metrics: ServerMetrics
    runner: SignatureRunner
    manager: ModelManager
    core: ServingCore
    request_log: RequestLogger
    guard: auth.Guard | None  # --auth_token_file
    health: ServerHealth | None  # --enable_grpc_healthcheck_service


def assemble(options: ServeOptions, files: ServerFiles) -> ServingParts:
    """Every part `options` and its `files` ask for; nothing is loaded or opened yet."""
    metrics = ServerMetrics(is_served=lambda name: name in manager.model_names())
    health = ServerHealth() if options.enable_grpc_healthcheck_service else None
    # --num_request_iterations_for_warmup=0 means once, as in TF Serving.
    runner = SignatureRunner(max_tensor_bytes=options.max_tensor_bytes or options.max_request_bytes,
                             warmup_iterations=options.num_request_iterations_for_warmup or 1,
                             max_request_batch_size=options.max_request_batch_size)
    manager = ModelManager(
        files.model_config, batching=files.batching,
        warmup=runner.warmup if options.enable_model_warmup else None,
        allow_labels_for_unavailable=options.allow_version_labels_for_unavailable_models,
        on_batch=metrics.record_batch, load_retries=options.max_num_load_retries,
        load_retry_interval_s=options.load_retry_interval_micros / 1e6,
        saved_model_tags=files.saved_model_tags,
        # A drain turns health to NOT_SERVING for good, whatever these updates say.
        on_change=(lambda: health.update(manager.ready())) if health is not None else None,
        verify_key=load_public_key(options.verify_key, "--verify_key") if options.verify_key else None)
    return ServingParts(
        files=files, metrics=metrics, runner=runner, manager=manager, core=ServingCore(manager, runner),
        request_log=RequestLogger(options, lambda: manager.config, registry=metrics.registry,
                                  saved_model_tags=files.saved_model_tags),
        guard=auth.guard(options.auth_token_file, metrics.record_auth_refusal), health=health)
