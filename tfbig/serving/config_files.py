"""TF Serving's config files: read them, build them from flags, write them.

Both engines start from the same three protos: `ModelServerConfig` (which
models, where, which versions, labels), `BatchingParameters` and
`MonitoringConfig`. They come from TF Serving's files when given, or from
tfbig's flags otherwise; the launcher writes them back out in text format for
`tensorflow_model_server`, the embedded server uses them directly.
"""

from __future__ import annotations

import dataclasses
import os
import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfbig.atoi import simple_atoi
from tfbig.serving.errors import ServeConfigError
from tfbig.serving.logging_config import check_logging
from tfbig.serving.options import DEFAULT_PROMETHEUS_PATH, ServeOptions
from tfbig.serving.protos import DEFAULT_MAX_BATCH_SIZE, BatchingParameters, MonitoringConfig, SSLConfig
from tfbig.serving.tls import check_ssl_config

MODEL_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring.config"
# Model names become URL path segments and never address files: plain names only.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name or "") or ".." in name:
        raise ServeConfigError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '-' and '.' "
            f"(no '/', no '..', not a path)")
    return name


def read_text_proto(path: str, message, flag: str):
    try:
        with open(path, encoding="utf-8") as f:
            return text_format.Parse(f.read(), message)
    except OSError as error:
        raise ServeConfigError(f"--{flag}: cannot read {path}: {error.strerror}") from None
    except text_format.ParseError as error:
        raise ServeConfigError(
            f"--{flag}: {path} is not a valid {message.DESCRIPTOR.name} text proto: {error}") from None


def write_text_proto(message, path: str) -> str:
    """Written atomically: a server polling the file never reads half of it."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(message))
    os.replace(temporary, path)
    return path


def version_policy(text: str) -> model_server_config_pb2.ModelConfig:
    """`latest:N`, `all` or `specific:V1,V2` as a ModelConfig with that policy set."""
    config = model_server_config_pb2.ModelConfig()
    policy = config.model_version_policy
    kind, _, arguments = text.partition(":")
    try:
        if kind == "latest":
            policy.latest.num_versions = int(arguments or 1)
            if policy.latest.num_versions < 1:
                raise ValueError
        elif kind == "all" and not arguments:
            policy.all.SetInParent()
        elif kind == "specific":
            policy.specific.versions.extend(int(v) for v in arguments.split(","))
        else:
            raise ValueError
    except ValueError:
        raise ServeConfigError(
            f"--model_version_policy {text!r}: expected latest:N (N >= 1), all, "
            f"or specific:V1,V2") from None
    return config


def _labels(entries) -> dict[str, int]:
    labels = {}
    for entry in entries:
        label, _, text = entry.partition("=")
        version = simple_atoi(text)
        if not label or version is None:
            raise ServeConfigError(f"--version_labels {entry!r}: expected LABEL=VERSION, e.g. stable=3")
        labels[label] = version
    return labels


def model_server_config(options: ServeOptions) -> model_server_config_pb2.ModelServerConfig:
    """The models to serve, from --model_config_file or --model_name/--model_base_path."""
    if options.model_config_file and options.model_base_path:
        raise ServeConfigError("give either --model_config_file or --model_base_path, not both")
    if options.model_config_file:
        config = read_text_proto(options.model_config_file,
                                 model_server_config_pb2.ModelServerConfig(), "model_config_file")
    elif options.model_base_path:
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add()
        model.CopyFrom(version_policy(options.model_version_policy))
        model.name = options.model_name
        model.base_path = os.path.abspath(options.model_base_path)
        model.model_platform = "tensorflow"
        for label, version in _labels(options.version_labels).items():
            model.version_labels[label] = version
    else:
        raise ServeConfigError("nothing to serve: give --model_base_path (with --model_name) "
                               "or --model_config_file")
    check_models(config)
    return config


def check_models(config: model_server_config_pb2.ModelServerConfig) -> None:
    if config.WhichOneof("config") != "model_config_list":
        raise ServeConfigError("the model config must have a model_config_list")
    names = set()
    for model in config.model_config_list.config:
        check_model_name(model.name)
        if model.name in names:
            raise ServeConfigError(f"model {model.name!r} is listed twice in the model config")
        names.add(model.name)
        if not model.base_path:
            raise ServeConfigError(f"model {model.name!r} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ServeConfigError(f"model {model.name!r}: model_platform "
                                   f"{model.model_platform!r} is not served; use 'tensorflow'")
        check_logging(model)


def batching_parameters(options: ServeOptions):
    """TF Serving's BatchingParameters, or None when batching is off."""
    from_flags = options.max_batch_size > 0
    if options.batching_parameters_file and not options.enable_batching:
        raise ServeConfigError("--batching_parameters_file is set without --enable_batching")
    if not (options.enable_batching or from_flags):
        return None
    if options.batching_parameters_file:
        params = read_text_proto(options.batching_parameters_file, BatchingParameters(),
                                 "batching_parameters_file")
    else:
        params = BatchingParameters()
    if options.max_batch_size > 0:
        params.max_batch_size.value = options.max_batch_size
    if options.batch_timeout_micros >= 0:
        params.batch_timeout_micros.value = options.batch_timeout_micros
    if options.max_enqueued_batches > 0:
        params.max_enqueued_batches.value = options.max_enqueued_batches
    if options.num_batch_threads > 0:
        params.num_batch_threads.value = options.num_batch_threads
    if options.allowed_batch_sizes:
        try:
            sizes = [int(s) for s in options.allowed_batch_sizes.split(",")]
        except ValueError:
            raise ServeConfigError(f"--allowed_batch_sizes {options.allowed_batch_sizes!r}: "
                                   f"expected comma-separated integers") from None
        del params.allowed_batch_sizes[:]
        params.allowed_batch_sizes.extend(sizes)
    check_batching(params)
    return params


def check_batching(params) -> None:
    """Refuses what TF Serving refuses (batching_session.cc, shared_batch_scheduler.h), so a
    batching file that works here also starts tensorflow_model_server."""
    sizes = list(params.allowed_batch_sizes)
    if sizes != sorted(set(sizes)) or (sizes and sizes[0] < 1):
        raise ServeConfigError(f"allowed_batch_sizes {sizes} must be increasing positive integers")
    max_batch = params.max_batch_size.value if params.HasField("max_batch_size") else DEFAULT_MAX_BATCH_SIZE
    if not params.enable_large_batch_splitting.value:
        if sizes and sizes[-1] != max_batch:
            raise ServeConfigError(
                f"the last entry in allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                f"({max_batch}), as TF Serving requires")
        return
    execution = (params.max_execution_batch_size.value if params.HasField("max_execution_batch_size")
                 else max_batch)
    if execution > max_batch:
        raise ServeConfigError(
            f"with enable_large_batch_splitting, max_execution_batch_size ({execution}) must not "
            f"exceed max_batch_size ({max_batch}), as TF Serving requires")
    if sizes and sizes[-1] != execution:
        raise ServeConfigError(
            f"with enable_large_batch_splitting, the last entry in allowed_batch_sizes ({sizes[-1]}) "
            f"must equal max_execution_batch_size ({execution}), as TF Serving requires")


def saved_model_tags(options: ServeOptions) -> frozenset[str]:
    """The MetaGraph's tag set, split on commas as TF Serving's server.cc splits it."""
    tags = frozenset(options.saved_model_tags.split(","))
    if "" in tags:
        raise ServeConfigError(f"--saved_model_tags {options.saved_model_tags!r}: expected "
                               f"comma-separated tags, e.g. serve or serve,tpu")
    return tags


def monitoring_config(options: ServeOptions):
    if options.monitoring_config_file:
        config = read_text_proto(options.monitoring_config_file, MonitoringConfig(),
                                 "monitoring_config_file")
    else:
        config = MonitoringConfig()
    if options.prometheus_path:
        config.prometheus_config.enable = True
        config.prometheus_config.path = options.prometheus_path
    if config.prometheus_config.enable and not config.prometheus_config.path:
        config.prometheus_config.path = DEFAULT_PROMETHEUS_PATH
    return config


def ssl_config(options: ServeOptions):
    if not options.ssl_config_file:
        return None
    config = read_text_proto(options.ssl_config_file, SSLConfig(), "ssl_config_file")
    check_ssl_config(config)
    return config


@dataclasses.dataclass(frozen=True)
class ServerFiles:
    """What the flags' files say (and the flags standing in for them), read and checked
    once, before any part of a server is built: a bad file stops `tfbig serve` at start."""

    model_config: model_server_config_pb2.ModelServerConfig
    batching: object  # BatchingParameters, or None without --enable_batching
    monitoring: object  # MonitoringConfig
    ssl: object  # SSLConfig, or None without --ssl_config_file
    saved_model_tags: frozenset[str]

    @classmethod
    def read(cls, options: ServeOptions) -> "ServerFiles":
        return cls(model_server_config(options), batching_parameters(options), monitoring_config(options),
                   ssl_config(options), saved_model_tags(options))
