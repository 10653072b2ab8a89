"""Typed configs: schema dataclasses plus YAML loading, overrides and validation."""

from tfbig.config.loader import (
    RUN_CONFIG_FILE,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    replace,
    run_directory_of,
    save_config,
)
from tfbig.config.schema import (
    MODEL_CONFIGS,
    ClusterConfig,
    CNNConfig,
    CompressConfig,
    Config,
    DataConfig,
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
    PruneConfig,
    QATConfig,
    ScheduleConfig,
    TrainConfig,
    TransformerEncoderConfig,
)

__all__ = [
    "ConfigError", "apply_overrides", "config_from_dict", "config_to_dict", "dump_config",
    "load_config", "replace", "run_directory_of", "save_config", "RUN_CONFIG_FILE",
    "MODEL_CONFIGS", "CNNConfig", "Config",
    "DataConfig", "DistributeConfig", "EarlyStoppingConfig", "GPTConfig", "LSTMConfig",
    "MeshConfig", "MLPConfig", "OptimizerConfig", "OutputConfig", "PipelineConfig", "ClusterConfig", "CompressConfig",
    "DistillConfig", "PruneConfig", "QATConfig", "ScheduleConfig", "TrainConfig",
    "TransformerEncoderConfig",
]
