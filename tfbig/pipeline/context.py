"""What every stage of `tfbig pipeline` is given: the config, the run and the record so far."""

from __future__ import annotations

import dataclasses
import functools
import re

from tfbig.config import Config, replace
from tfbig.pipeline.state import PipelineState
from tfbig.rundir import RunDir
from tfbig.summaries import ExportSummary


@dataclasses.dataclass
class PipelineContext:
    config: Config
    state: PipelineState
    model_name: str
    base_path: str
    server: object = None  # the ServerProcess started by `serve`, while it runs

    @property
    def run_dir(self) -> str:
        return self.config.output.dir

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def dataset(self) -> str:
        """The token dataset the prepare stage writes (`run_pipeline` resolves data.paths)."""
        return self.config.data.paths[0]

    @property
    def train_config(self) -> Config:
        """The config the run is trained with: uncompressed. In a run directory's config,
        compress.method marks a run that compression made (see `tfbig.export.restore`);
        the pipeline's compress section is applied by the compress stage instead."""
        return replace(self.config, {"compress": {}})

    @functools.cached_property
    def strategy(self):
        from tfbig.distribute import make_strategy

        return make_strategy(self.config.distribute)

    @functools.cached_property
    def credentials(self):
        """What the pipeline's requests to its server send: the token of pipeline.auth_token_file."""
        from tfbig.serving import Credentials

        token_file = self.config.pipeline.auth_token_file
        return Credentials.from_files(token_file=token_file) if token_file else Credentials()

    @property
    def registry(self):
        from tfbig.lifecycle import ModelRegistry

        return ModelRegistry(self.base_path, model_name=self.model_name)

    @property
    def compressed(self) -> bool:
        return self.config.compress.method != "none"

    @property
    def export_source(self) -> str:
        """The run directory whose model is exported: the compressed one, if any."""
        return self.run.compressed if self.compressed else self.run_dir

    @property
    def version(self) -> int:
        return self.state.summary(ExportSummary).version


def latest_checkpoint(run_dir: str) -> str | None:
    import tensorflow as tf  # reads the checkpoint index file; no TF op runs

    return tf.train.latest_checkpoint(RunDir(run_dir).checkpoints)


def checkpoint_step(path: str | None) -> int:
    match = re.search(r"ckpt-(\d+)$", path or "")
    return int(match.group(1)) if match else -1
