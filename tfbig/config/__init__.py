"""Typed configs: schema dataclasses plus YAML loading, overrides and validation."""

from tfbig.config.errors import ConfigError
from tfbig.config.loader import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe_config,
    dump_config,
    load_config,
    replace,
    resolve_config_path,
    run_directory_of,
    save_config,
    shipped_configs,
)
from tfbig.config.schema import (
    MODEL_CONFIGS,
    ClusterConfig,
    CNNConfig,
    CompressConfig,
    Config,
    DataConfig,
    DataServiceConfig,
    DistillConfig,
    DistributeConfig,
    EarlyStoppingConfig,
    GPTConfig,
    LSTMConfig,
    MeshConfig,
    MLPConfig,
    OptimizerConfig,
    OutputConfig,
    PipelineConfig,
    PrepareConfig,
    PruneConfig,
    QATConfig,
    ScheduleConfig,
    TrainConfig,
    TransformerEncoderConfig,
)

__all__ = [
    "ConfigError", "apply_overrides", "config_from_dict", "config_to_dict", "dump_config",
    "load_config", "replace", "run_directory_of", "save_config",
    "describe_config", "resolve_config_path", "shipped_configs",
    "MODEL_CONFIGS", "CNNConfig", "Config",
    "DataConfig", "DataServiceConfig", "DistributeConfig", "EarlyStoppingConfig", "GPTConfig", "LSTMConfig",
    "MeshConfig", "MLPConfig", "OptimizerConfig", "OutputConfig", "PipelineConfig", "PrepareConfig", "ClusterConfig", "CompressConfig",
    "DistillConfig", "PruneConfig", "QATConfig", "ScheduleConfig", "TrainConfig",
    "TransformerEncoderConfig",
]
