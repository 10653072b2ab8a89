"""Which requests of which model are logged, and where: TF Serving's `logging_config` and tfbig's flags.

A model's own `logging_config` in models.config (logging_config.proto:
`log_collector_config { filename_prefix }`, `sampling_config { sampling_rate }`)
wins; a model without one is logged as `--request_log_dir DIR
--request_log_sampling_rate R` say, to `DIR/MODEL_NAME.*.tfrecord`. A relative
filename_prefix is taken relative to --request_log_dir (else the working
directory). As in TF Serving, a logging_config without a sampling_config
logs nothing (its rate is 0). The same settings reach tensorflow_model_server
through the models.config the launcher writes (`with_request_logging`).
"""

from __future__ import annotations

import dataclasses
import os

from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from tfbig.serving.errors import ServeConfigError

# The embedded server writes TFRecord files; a collector type names that or nothing.
COLLECTOR_TYPES = ("", "tfrecord")


@dataclasses.dataclass(frozen=True)
class ModelLogging:
    """One model's request logging: its files' absolute path prefix and its sampling."""

    prefix: str
    sampling: logging_config_pb2.SamplingConfig
    rate: float  # sampling.sampling_rate, read once: every request consults it


def check_flags(options) -> None:
    """The --request_log_* flags, refused at startup when they cannot work."""
    if not 0.0 <= options.request_log_sampling_rate <= 1.0:
        raise ServeConfigError(f"--request_log_sampling_rate={options.request_log_sampling_rate:g}: "
                               f"expected a fraction of requests between 0 and 1")
    if options.request_log_max_file_bytes <= 0 or options.request_log_max_file_seconds <= 0:
        raise ServeConfigError("--request_log_max_file_bytes and --request_log_max_file_seconds must be positive")
    if options.request_log_max_total_bytes < options.request_log_max_file_bytes:
        raise ServeConfigError(
            f"--request_log_max_total_bytes={options.request_log_max_total_bytes} is below "
            f"--request_log_max_file_bytes={options.request_log_max_file_bytes}: the bound must hold "
            f"at least one file")


def check_logging(model: model_server_config_pb2.ModelConfig) -> None:
    """A model's logging_config, refused when the embedded server could not honour it."""
    if not model.HasField("logging_config"):
        return
    config = model.logging_config
    where = f"model {model.name!r}: logging_config"
    if config.log_collector_config.type not in COLLECTOR_TYPES:
        raise ServeConfigError(f"{where}: log_collector_config.type {config.log_collector_config.type!r} "
                               f"is not written here; use \"tfrecord\" or leave it out")
    prefix = config.log_collector_config.filename_prefix
    if prefix.endswith(("/", os.sep)) or os.path.basename(prefix) in (".", ".."):
        raise ServeConfigError(f"{where}: filename_prefix {prefix!r} names a directory; add a file "
                               f"name prefix, e.g. {os.path.join(prefix, model.name)!r}")
    sampling = config.sampling_config
    if not 0.0 <= sampling.sampling_rate <= 1.0:
        raise ServeConfigError(f"{where}: sampling_rate {sampling.sampling_rate:g} is not between 0 and 1")
    if sampling.per_task_sampling_configs or config.HasField("custom_logging_config"):
        raise ServeConfigError(f"{where}: per_task_sampling_configs and custom_logging_config are not "
                               f"supported; give one sampling_rate")


def logging_config(model: model_server_config_pb2.ModelConfig, options) -> logging_config_pb2.LoggingConfig | None:
    """The model's own logging_config, or the flags' when it has none; None: not logged."""
    if model.HasField("logging_config"):
        return model.logging_config
    if not options.request_log_dir:
        return None
    config = logging_config_pb2.LoggingConfig()
    config.log_collector_config.filename_prefix = os.path.join(os.path.abspath(options.request_log_dir),
                                                               model.name)
    config.sampling_config.sampling_rate = options.request_log_sampling_rate
    return config


def request_logging(config: model_server_config_pb2.ModelServerConfig, options) -> dict[str, ModelLogging]:
    """Model name -> its logging, for the models that are logged."""
    logged = {}
    for model in config.model_config_list.config:
        settings = logging_config(model, options)
        if settings is None:
            continue
        prefix = settings.log_collector_config.filename_prefix or model.name
        base = os.path.abspath(options.request_log_dir or os.getcwd())
        logged[model.name] = ModelLogging(os.path.join(base, prefix), settings.sampling_config,
                                          settings.sampling_config.sampling_rate)
    return logged


def with_request_logging(config: model_server_config_pb2.ModelServerConfig, options):
    """A copy of `config` in which every model the flags log has its logging_config written out,
    for tensorflow_model_server, which knows no --request_log_* flags."""
    copy = model_server_config_pb2.ModelServerConfig()
    copy.CopyFrom(config)
    for model in copy.model_config_list.config:
        settings = logging_config(model, options)
        if settings is not None and not model.HasField("logging_config"):
            model.logging_config.CopyFrom(settings)
    return copy
