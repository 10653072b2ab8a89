"""`tfbig serve`'s flags: tensorflow_model_server's own, plus a few of tfbig's.

An existing TF Serving command line works by swapping the program name, so
flags keep TF Serving's names, defaults and `--flag=value` syntax (dashed
spellings are accepted too). tfbig adds flags for what TF Serving only takes
as config files (version policy, labels, batching, Prometheus); with the real
binary they are written into those files, with the embedded server they are
used directly. TF Serving flags the embedded server has no use for (GPU memory
fraction, XLA, TFLite pools, ...) are accepted and passed on to the binary.
"""

from __future__ import annotations

import argparse
import dataclasses

from tfbig.config.schema import SERVING_ENGINES as ENGINES
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
SERVE_TAG = "serve"  # the MetaGraph TF Serving loads unless --saved_model_tags says otherwise

# TF Serving flags forwarded to the binary untouched and ignored by the embedded server.
PASS_THROUGH_FLAGS = (
    "grpc_socket_path", "num_load_threads", "num_unload_threads",
    "flush_filesystem_caches",
    "tensorflow_session_parallelism", "tensorflow_session_config_file", "platform_config_file",
    "per_process_gpu_memory_fraction", "prefer_tflite_model",
    "num_tflite_pools", "num_tflite_interpreters_per_pool", "enable_profiler", "mixed_precision",
    "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled",
    "enable_per_model_batching_parameters", "enable_signature_method_name_check",
    "remove_unused_fields_from_bundle_metagraph", "thread_pool_factory_config_file",
    "enable_serialization_as_tensor_content", "use_alts_credentials", "skip_initialize_tpu",
)


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What to serve and how; field names are the flag names."""

    # TensorFlow Serving's flags (same defaults as tensorflow_model_server).
    port: int = 8500
    rest_api_port: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    ssl_config_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    grpc_channel_arguments: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    saved_model_tags: str = SERVE_TAG
    enable_grpc_healthcheck_service: bool = False
    grpc_max_threads: int = 0  # 0: the server's own choice (the binary: 4 per CPU; embedded: 64)
    rest_api_num_threads: int = 0
    version: bool = False
    # tfbig's additions.
    engine: str = "auto"
    host: str = "0.0.0.0"
    model_version_policy: str = "latest:1"
    version_labels: tuple[str, ...] = ()
    max_batch_size: int = 0
    batch_timeout_micros: int = -1
    max_enqueued_batches: int = 0
    num_batch_threads: int = 0
    allowed_batch_sizes: str = ""
    prometheus_path: str = ""
    # Request logs (tfbig.serving.logging_config): a file is closed at the first of its size
    # and age bounds, the age bounding how late a reader sees a record.
    request_log_dir: str = ""
    request_log_sampling_rate: float = 1.0
    request_log_max_file_bytes: int = 16 << 20
    request_log_max_total_bytes: int = 1 << 30
    request_log_max_file_seconds: float = 60.0
    max_request_bytes: int = 64 << 20
    max_tensor_bytes: int = 0  # 0: max_request_bytes, the most a client could send outright
    max_request_batch_size: int = 0
    drain_seconds: float = 10.0
    config_dir: str = ""
    verify_key: str = ""
    auth_token_file: str = ""
    pass_through: tuple[str, ...] = ()


_HELP = {
    "port": "gRPC port (0 picks a free one)",
    "rest_api_port": "REST port; 0 disables REST, as in TF Serving",
    "model_base_path": "the model's base path: integer version subdirectories",
    "model_config_file": "ModelServerConfig text proto listing several models",
    "version": "print the server's and TensorFlow's versions and exit",
    "saved_model_tags": "comma-separated tags of the MetaGraph to load from each SavedModel",
    "enable_grpc_healthcheck_service": "serve grpc.health.v1.Health (Kubernetes gRPC probes)",
    "grpc_max_threads": "threads handling gRPC requests (0: the server's default)",
    "rest_api_num_threads": "threads handling REST requests (0: the server's default)",
    "engine": "auto: tensorflow_model_server when on PATH, else the embedded server",
    "host": "address to bind (embedded server)",
    "model_version_policy": "latest:N, all or specific:V1,V2 (with --model_base_path)",
    "version_labels": "LABEL=VERSION, repeatable (with --model_base_path)",
    "max_batch_size": "enables batching with this max_batch_size (else batching_parameters_file)",
    "allowed_batch_sizes": "comma-separated sizes batches are padded up to",
    "prometheus_path": "serve Prometheus metrics at this path (else monitoring_config_file)",
    "request_log_dir": "log sampled requests of every model without a logging_config to DIR/MODEL.*.tfrecord",
    "request_log_sampling_rate": "fraction of requests logged with --request_log_dir (0 to 1)",
    "request_log_max_file_bytes": "a request log file is closed and a new one begun past this size",
    "request_log_max_total_bytes": "request log files past this total are deleted, oldest first",
    "request_log_max_file_seconds": "a request log file is closed after this many seconds",
    "max_request_bytes": "largest request body / gRPC message accepted (embedded server)",
    "max_tensor_bytes": "most bytes one request's inputs may take once decoded, declared shapes "
                        "filled included (embedded server); 0 = --max_request_bytes",
    "max_request_batch_size": "largest first dimension one request may send; 0 = no limit",
    "drain_seconds": "on SIGTERM, how long in-flight requests may take to finish",
    "config_dir": "where config files for tensorflow_model_server are written",
    "verify_key": "an Ed25519 public key (PEM): load only versions it signed (embedded server; "
                  "tfbig keys generate makes one)",
    "auth_token_file": "accept only requests bearing one of this file's tokens, one per line "
                       "(embedded server; re-read when it changes)",
}


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _spellings(name: str) -> list[str]:
    dashed = name.replace("_", "-")
    return [f"--{name}"] if dashed == name else [f"--{name}", f"--{dashed}"]


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for field in dataclasses.fields(ServeOptions):
        if field.name == "pass_through":
            continue
        kwargs = {"dest": field.name, "default": field.default, "help": _HELP.get(field.name)}
        if field.type == "bool":
            kwargs.update(type=_bool, nargs="?", const=True, metavar="BOOL")
        elif field.name == "version_labels":
            kwargs.update(action="append", default=[], metavar="LABEL=VERSION")
        elif field.name == "engine":
            kwargs.update(choices=ENGINES)
        else:
            kwargs.update(type={"int": int, "float": float}.get(field.type, str))
        parser.add_argument(*_spellings(field.name), **kwargs)
    for name in PASS_THROUGH_FLAGS:
        # TF's flag parser takes a bare boolean flag as true, as in `--enable_profiler`.
        parser.add_argument(*_spellings(name), dest=f"pass_{name}", default=None, nargs="?",
                            const="true", help=argparse.SUPPRESS)
    return parser


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)
              if f.name != "pass_through"}
    values["version_labels"] = tuple(values["version_labels"])
    values["pass_through"] = tuple(
        f"--{name}={getattr(args, f'pass_{name}')}" for name in PASS_THROUGH_FLAGS
        if getattr(args, f"pass_{name}", None) is not None)
    return ServeOptions(**values)


def parse_serve_args(argv: list[str]) -> ServeOptions:
    parser = build_parser(argparse.ArgumentParser(prog="tfbig serve"))
    return options_from_args(parser.parse_args(argv))
