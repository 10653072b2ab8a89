"""`tfbig train` as a function: config in, trained run directory out.

Owns the run directory contract: `config.yaml` (resolved), `checkpoints/`,
`logs/` and `metrics.jsonl`. Training into a directory that already holds a
run resumes it; the model and data must be the same (a changed `train.steps`
is how a run is extended), otherwise we refuse rather than mix two runs.
"""

from __future__ import annotations

import os

import tf_keras as keras
import yaml

from tfbig import data as tfdata
from tfbig import models
from tfbig.config import Config, ConfigError, config_to_dict, save_config
from tfbig.distribute import make_strategy
from tfbig.models import precision_policy
from tfbig.train.optim import make_optimizer
from tfbig.train.trainer import Trainer, TrainResult

CONFIG_FILE = "config.yaml"
# Sections that define what is being trained; a resumed run must not change them.
FIXED_SECTIONS = ("model", "data")


def train(config: Config) -> TrainResult:
    """Train `config` into `config.output.dir`, resuming a run already there."""
    run_dir = config.output.dir
    check_resumable(config, run_dir)
    os.makedirs(run_dir, exist_ok=True)
    save_config(config, os.path.join(run_dir, CONFIG_FILE))
    # The strategy first: on CPU it may still have to split the device, which
    # TensorFlow allows only before the runtime starts.
    strategy = make_strategy(config.distribute)
    with precision_policy(config.train.precision):
        keras.utils.set_random_seed(config.train.seed)
        source = tfdata.load_data(config.data)
        with strategy.scope():
            model = models.build_model(config.model, source.spec)
            optimizer = make_optimizer(config.train)
        trainer = Trainer(
            model=model, optimizer=optimizer, strategy=strategy, source=source,
            config=config.train, run_dir=run_dir, data_seed=config.data.seed,
        )
        return trainer.fit()


def check_resumable(config: Config, run_dir: str) -> None:
    """Refuse to continue the run in `run_dir` with another model or data."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        previous = yaml.safe_load(f) or {}
    current = config_to_dict(config)
    for section in FIXED_SECTIONS:
        if previous.get(section) != current[section]:
            raise ConfigError(
                f"{section}: differs from the run already in {run_dir!r}, which cannot "
                f"be resumed with another {section}. Choose a new --output-dir, or "
                f"train {path} unchanged to resume it."
            )
