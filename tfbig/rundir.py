"""The run directory: every file a stage of tfbig writes into a run, named once.

Training makes a run directory, and every later stage (compress, export, the
pipeline, the report) adds to it or reads it; each of them finds a file
through `RunDir(path)`, so the layout below is the whole contract, and the
README's run-directory table lists exactly these entries. A compressed run is
a run directory too (`tfbig compress` writes one, the pipeline keeps it in
`compressed/`), and so is a parameter-server run's `evaluator/`.

Paths only: nothing here reads, writes or imports TensorFlow, so the report
and the config loader can use it.
"""

from __future__ import annotations

import dataclasses
import os


class Entry:
    """One file or directory of a run: `RunDir(path).<attribute>` is its path.

    `name` is how it is spelled in the run directory (a directory's with a
    trailing "/"); the docstring says who writes it and what it holds.
    """

    def __init__(self, name: str, doc: str):
        self.name = name
        self.__doc__ = f"`{name}`: {doc}"

    def __get__(self, run, owner=None):
        if run is None:
            return self
        return os.path.join(run.path, self.name.rstrip("/"))


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The files of the run directory at `path`, by what they are."""

    path: str

    # Made by `tfbig train`.
    config = Entry("config.yaml", "the resolved config; `tfbig train RUN/config.yaml` reproduces "
                   "(or resumes) the run, in RUN wherever it now is")
    checkpoints = Entry("checkpoints/", "`tf.train.CheckpointManager` checkpoints (model, optimizer, "
                        "step, dropout RNG, early-stopping state)")
    logs = Entry("logs/", "TensorBoard event files, `logs/train` and `logs/eval`")
    metrics = Entry("metrics.jsonl", "one JSON record per line: training figures every `log_every` "
                    "steps, `eval_*` figures every evaluation")
    evaluator = Entry("evaluator/", "a parameter-server run's evaluator: its `metrics.jsonl`, `logs/`")
    # Made by `tfbig export RUN` when given no model base path.
    export = Entry("export/", "the default model base path of `tfbig export RUN` (integer versions)")
    # Made by `tfbig compress`, in the run it writes.
    artifacts = Entry("artifacts/", "what the compression report measured: the float SavedModel "
                      "before, the compressed SavedModel or TFLite file after")
    compression_json = Entry("report.json", "the compression report, with the method's choices")
    compression_md = Entry("report.md", "the compression report as a Markdown table")
    compression_png = Entry("report.png", "the compression report's plot: quality against gzip size")
    # Made by `tfbig pipeline`.
    pipeline = Entry("pipeline.json", "what each stage did, and when (`tfbig.summaries`)")
    dataset = Entry("dataset/", "the token dataset the prepare stage makes from `data.prepare` "
                    "when `data.paths` names no directory")
    compressed = Entry("compressed/", "the compressed run (a run directory)")
    compressed_from = Entry("compressed_from.txt", "in `compressed/`: the checkpoint it was made from")
    models = Entry("models/", "model base paths, `models/NAME/` (versions, `models.config`, "
                   "`lifecycle.json`)")
    validate_log = Entry("validate.log", "the output of the server the validate stage started")
    serve_log = Entry("serve.log", "the output of the server the serve stage started")
    verify_key = Entry("verify_key.pem", "the public half of `pipeline.sign_key`: the serve stage's "
                       "server loads only versions it signed")
    serving = Entry("serving.json", "the smoke query, and latency per protocol and concurrency")
    environment = Entry("environment.json", "versions, devices and strategy")
    # Made by `tfbig report RUN` (the pipeline's last stage).
    report = Entry("report/", "`index.html`, `report.json` and the figures as PNGs")

    @classmethod
    def entries(cls) -> dict[str, Entry]:
        """Attribute name -> entry, in the order above."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, Entry)}

    def model_base_path(self, model_name: str) -> str:
        """`models/NAME/`: the pipeline's model base path for `model_name`."""
        return os.path.join(self.models, model_name)

    def has_trained(self) -> bool:
        """Whether training has written here (checkpoints or metrics), beside the config."""
        return os.path.exists(self.checkpoints) or os.path.exists(self.metrics)
