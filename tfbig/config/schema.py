"""The typed shape of a tfbig config.

Every section is a frozen dataclass so a resolved config can be passed around
without anyone mutating it half-way through a run. Field metadata carries the
allowed range (`min`, `max`); each section checks its values and its rules
when it is built (`tfbig.config.checks`), so a config made in Python is
checked as one read from YAML is. Defaults are chosen so that a config naming only a model and a data
set trains something sensible on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal, Optional, Union

from tfbig.config.checks import Checked, bounded
from tfbig.config.errors import SectionError


def items(*values):
    """A dataclass field holding a list, with a default copied per instance."""
    return dataclasses.field(default_factory=lambda: list(values))


# --------------------------------------------------------------------- models
# One dataclass per model family; `name` selects which one a `model:` section is.


@dataclasses.dataclass(frozen=True)
class MLPConfig(Checked):
    name: Literal["mlp"] = "mlp"
    hidden_units: list[int] = items(256, 256)
    activation: Literal["relu", "gelu", "tanh", "swish"] = "relu"
    dropout: float = bounded(0.0, min=0.0, max=0.9)


@dataclasses.dataclass(frozen=True)
class CNNConfig(Checked):
    """A small ResNet: a stem convolution, then stages of residual blocks."""

    name: Literal["cnn"] = "cnn"
    # One entry per stage; every stage after the first halves the resolution.
    filters: list[int] = items(32, 64)
    blocks_per_stage: int = bounded(2, min=1)
    dropout: float = bounded(0.0, min=0.0, max=0.9)


@dataclasses.dataclass(frozen=True)
class LSTMConfig(Checked):
    """Sequence classifier: (embedding or projection) -> stacked LSTMs -> head."""

    name: Literal["lstm"] = "lstm"
    units: int = bounded(128, min=1)
    num_layers: int = bounded(1, min=1)
    bidirectional: bool = False
    # Only used when the inputs are integer token ids.
    embedding_dim: int = bounded(64, min=1)
    dropout: float = bounded(0.0, min=0.0, max=0.9)


@dataclasses.dataclass(frozen=True)
class TransformerEncoderConfig(Checked):
    """Bidirectional encoder classifier, mean-pooled over positions."""

    name: Literal["transformer_encoder"] = "transformer_encoder"
    d_model: int = bounded(128, min=1)
    num_layers: int = bounded(2, min=1)
    num_heads: int = bounded(4, min=1)
    # 0 means 4 * d_model, the ratio used by BERT and GPT.
    d_ff: int = bounded(0, min=0)
    max_len: int = bounded(512, min=1)
    dropout: float = bounded(0.1, min=0.0, max=0.9)

    def check(self) -> None:
        _check_heads(self)


@dataclasses.dataclass(frozen=True)
class GPTConfig(Checked):
    """Decoder-only language model (GPT-2 layout: pre-LayerNorm, GELU MLP)."""

    name: Literal["gpt"] = "gpt"
    # 0 = the data's vocabulary (256 for the byte-level text data, the
    # tokenizer's for prepared token data). A model must match its data, so a
    # value here only states what the data is expected to give.
    vocab_size: int = bounded(0, min=0)
    # Size of the learned position table: the longest context the model accepts.
    max_len: int = bounded(128, min=1)
    d_model: int = bounded(128, min=1)
    num_layers: int = bounded(2, min=1)
    num_heads: int = bounded(4, min=1)
    # 0 means 4 * d_model.
    d_ff: int = bounded(0, min=0)
    dropout: float = bounded(0.0, min=0.0, max=0.9)
    tie_embeddings: bool = True
    layer_norm_epsilon: float = bounded(1e-5, min=0.0, min_exclusive=True)
    # Keep only each block's input for backprop and recompute the rest of its
    # activations then: less activation memory for one more forward pass.
    recompute: bool = False

    def check(self) -> None:
        _check_heads(self)
        if self.recompute and self.dropout:
            raise SectionError(self, "recompute", (
                f"blocks recomputed in backprop would draw new dropout masks; "
                f"set model.dropout=0 (got {self.dropout}) or model.recompute=false"))


def _check_heads(model) -> None:
    if model.d_model % model.num_heads:
        raise SectionError(model, "d_model", (
            f"{model.d_model} is not divisible by model.num_heads={model.num_heads}; "
            f"each attention head needs d_model / num_heads dims"))


ModelConfig = Union[
    MLPConfig, CNNConfig, LSTMConfig, TransformerEncoderConfig, GPTConfig
]
MODEL_CONFIGS: dict[str, type] = {
    "mlp": MLPConfig,
    "cnn": CNNConfig,
    "lstm": LSTMConfig,
    "transformer_encoder": TransformerEncoderConfig,
    "gpt": GPTConfig,
}


# ----------------------------------------------------------------------- data


# The data sets that yield language-model windows (what the gpt model trains on).
LANGUAGE_MODEL_DATA = ("text", "tokens")


@dataclasses.dataclass(frozen=True)
class PrepareConfig(Checked):
    """The corpus `tfbig pipeline`'s prepare stage turns into the `tokens` data set.

    The options are `tfbig data prepare`'s (see `tfbig.data.prepare`); the
    dataset goes to `data.paths[0]`, or to RUN/dataset/ when data.paths is empty.
    """

    # Files, globs or directories of .txt/.md/.py/.jsonl (and .gz). `stdlib:PATH` is
    # PATH under the running Python's standard library (`stdlib:` the whole of it),
    # so a config names a corpus that needs no download and no machine path.
    sources: list[str] = items()
    tokenizer: Literal["bpe", "unigram", "byte"] = "bpe"
    # 0 = 8192 for bpe and unigram (the byte tokenizer's is always 257).
    vocab_size: int = bounded(0, min=0)
    special_tokens: list[str] = items()
    eval_fraction: float = bounded(0.02, min=0.0, max=0.9, min_exclusive=True)
    text_field: str = "text"  # the text of a .jsonl line
    # The tokenizer's training sample: bounds its memory and time, whatever the corpus.
    sample_bytes: int = bounded(32 << 20, min=1)
    workers: int = bounded(0, min=0)  # tokenizing processes; 0 = all cores

    def check(self) -> None:
        if not self.sources:
            raise SectionError(self, "sources", (
                "name the corpus to prepare: files, globs or directories, e.g. "
                "[corpus/, 'stdlib:json']"))


@dataclasses.dataclass(frozen=True)
class DataConfig(Checked):
    """Where examples come from.

    `text`: byte-level language-model windows from text files (`paths`; empty
    means CPython's pydoc topics). `tokens`: a directory made by `tfbig data
    prepare` (`paths: [DIR]`; the vocabulary is its tokenizer's). `digits`: scikit-learn's bundled 8x8 digits.
    `npz`: a user file with arrays `x`, `y` (and optionally `x_eval`, `y_eval`).
    `tfrecord`: a directory written by `tfbig.data.write_tfrecords`.
    """

    name: Literal["text", "tokens", "digits", "npz", "tfrecord"] = "text"
    paths: list[str] = items()
    # Tokens per language-model window (inputs; targets are shifted by one).
    seq_len: int = bounded(128, min=1)
    # Fraction held out for evaluation, taken deterministically from the end.
    eval_fraction: float = bounded(0.1, min=0.0, max=0.9)
    seed: int = 0
    # `tokens` only: what `tfbig pipeline` prepares before training (none: the
    # directory in `paths` is prepared already, by `tfbig data prepare`).
    prepare: Optional[PrepareConfig] = None

    def check(self) -> None:
        if self.prepare is None:
            return
        if self.name != "tokens":
            raise SectionError(self, "prepare", (
                f"the pipeline prepares a token dataset for data.name 'tokens', not "
                f"{self.name!r}; set data.name: tokens, or remove data.prepare"))
        if len(self.paths) > 1:
            raise SectionError(self, "paths", (
                f"data.prepare writes one dataset directory, got {len(self.paths)} paths; "
                f"name one (or none: RUN/dataset)"))


# ---------------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Checked):
    name: Literal["sgd", "adam", "adamw", "adafactor"] = "adamw"
    learning_rate: float = bounded(1e-3, min=0.0, min_exclusive=True)
    # Decoupled weight decay (adamw only); never applied to norms or biases.
    weight_decay: float = bounded(0.01, min=0.0)
    beta_1: float = bounded(0.9, min=0.0, max=1.0)
    beta_2: float = bounded(0.999, min=0.0, max=1.0)
    epsilon: float = bounded(1e-8, min=0.0, min_exclusive=True)
    momentum: float = bounded(0.9, min=0.0, max=1.0)  # sgd only
    # Global-norm clipping of the (accumulated, all-reduced) gradient; 0 = off.
    clip_norm: float = bounded(1.0, min=0.0)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Checked):
    """Linear warmup to the peak learning rate, then the named decay."""

    name: Literal["constant", "cosine", "linear", "step"] = "cosine"
    warmup_steps: int = bounded(0, min=0)
    # Steps over which cosine/linear decay runs; 0 means train.steps.
    decay_steps: int = bounded(0, min=0)
    # Final learning rate as a fraction of the peak (cosine/linear).
    min_ratio: float = bounded(0.1, min=0.0, max=1.0)
    # `step`: multiply by `step_factor` at each boundary.
    step_boundaries: list[int] = items()
    step_factor: float = bounded(0.1, min=0.0, min_exclusive=True)


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig(Checked):
    # Empty metric = off. Names are eval metrics, e.g. `eval_loss`.
    metric: str = ""
    mode: Literal["min", "max"] = "min"
    patience: int = bounded(3, min=1)
    min_delta: float = bounded(0.0, min=0.0)

    def check(self) -> None:
        if self.metric and not self.metric.startswith("eval_"):
            raise SectionError(self, "metric", (
                f"{self.metric!r} is not an eval metric; use one of eval_loss, "
                f"eval_accuracy, eval_perplexity"))


@dataclasses.dataclass(frozen=True)
class TrainConfig(Checked):
    steps: int = bounded(1000, min=1)
    # Global batch: examples per optimizer step, over all replicas and all
    # accumulation micro-batches.
    batch_size: int = bounded(32, min=1)
    # Steps run inside one tf.function call; larger amortises Python overhead.
    steps_per_execution: int = bounded(10, min=1)
    # Split each step's batch into this many micro-batches whose gradients are
    # summed before one update: same result, 1/k of the activation memory.
    grad_accum_steps: int = bounded(1, min=1)
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    jit_compile: bool = False
    eval_every: int = bounded(200, min=0)  # 0 = only at the end
    eval_steps: int = bounded(0, min=0)  # 0 = the whole eval split
    checkpoint_every: int = bounded(200, min=1)
    keep_checkpoints: int = bounded(3, min=1)
    log_every: int = bounded(10, min=1)
    seed: int = 0
    progress_bar: bool = True
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(
        default_factory=EarlyStoppingConfig
    )

    def check(self) -> None:
        if self.batch_size % self.grad_accum_steps:
            raise SectionError(self, "batch_size", (
                f"{self.batch_size} is not divisible by train.grad_accum_steps="
                f"{self.grad_accum_steps}; each step's batch is split into grad_accum_steps "
                f"equal micro-batches"))


# ----------------------------------------------------------------- distribute


@dataclasses.dataclass(frozen=True)
class MeshConfig(Checked):
    """DTensor device mesh: `batch` x `model` devices (data x tensor parallel)."""

    batch: int = bounded(1, min=1)
    # Devices each sharded weight is split over (Megatron-style column/row).
    model: int = bounded(2, min=1)


@dataclasses.dataclass(frozen=True)
class DataServiceConfig(Checked):
    """Training input prepared by a tf.data service (see `tfbig.data.service`).

    It sits under `distribute`, not `data`: it says where the batches are
    made, not what they are, and a resumed run may read through another
    dispatcher (or none) without becoming another run.
    """

    # grpc://HOST:PORT of a running dispatcher (`tfbig data service
    # dispatcher`); empty = the input pipeline runs in the training process.
    dispatcher: str = ""

    def check(self) -> None:
        address = _DISPATCHER.fullmatch(self.dispatcher)
        if self.dispatcher and not (address and 0 < int(address.group(3)) < 65536):
            raise SectionError(self, "dispatcher", (
                f"{self.dispatcher!r} is not a dispatcher address; expected grpc://HOST:PORT, "
                f"e.g. grpc://10.0.0.5:5050"))


_DISPATCHER = re.compile(r"(grpc://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")


@dataclasses.dataclass(frozen=True)
class DistributeConfig(Checked):
    strategy: Literal[
        "one_device", "mirrored", "multi_worker", "parameter_server", "tpu", "dtensor"
    ] = "one_device"
    # mirrored without GPUs: split the CPU into this many logical devices.
    # With GPUs: use this many (0 = all visible GPUs).
    devices: int = bounded(0, min=0)
    # multi_worker all-reduce: ring (gRPC, any device), nccl (GPUs) or auto.
    collective: Literal["auto", "ring", "nccl"] = "auto"
    # Seconds a collective may wait for the other workers before failing the
    # step (a dead peer otherwise hangs the cluster); 0 = wait forever.
    collective_timeout_s: float = bounded(300.0, min=0.0)
    # parameter_server: split each variable over this many ps shards
    # (0 = MinSizePartitioner: shards of >= min_shard_bytes, at most one per ps).
    variable_shards: int = bounded(0, min=0)
    min_shard_bytes: int = bounded(256 << 10, min=1)
    # tpu: "local" (Colab / TPU VM), a grpc:// address or TPU name; empty =
    # from the environment (COLAB_TPU_ADDR, TPU_NAME).
    tpu: str = ""
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    data_service: DataServiceConfig = dataclasses.field(default_factory=DataServiceConfig)


# ------------------------------------------------------------------- compress


@dataclasses.dataclass(frozen=True)
class PruneConfig(Checked):
    """Magnitude pruning (TF-MOT) of Dense, Conv and attention kernels.

    Embeddings, norms, biases and positions stay dense by rule: they are a
    small share of the weights and pruning them costs far more accuracy.
    """

    schedule: Literal["polynomial_decay", "constant"] = "polynomial_decay"
    target_sparsity: float = bounded(0.8, min=0.0, max=0.99)
    initial_sparsity: float = bounded(0.0, min=0.0, max=0.99)
    # Steps of the fine-tuning run. end_step 0 = 70% of compress.steps, so the
    # last 30% recover accuracy under a fixed mask.
    begin_step: int = bounded(0, min=0)
    end_step: int = bounded(0, min=0)
    # Steps between mask updates; 0 = (end - begin) / 16, at least 1.
    frequency: int = bounded(0, min=0)
    # `2:4`: two zeros in every four consecutive input weights (sparse tensor
    # cores); layers whose kernels are not 2-D or 4-D stay dense.
    structure: Literal["unstructured", "2:4"] = "unstructured"
    # Regex over layer names; only matching layers are pruned. Empty = all.
    layers: str = ""


@dataclasses.dataclass(frozen=True)
class QATConfig(Checked):
    """Quantization-aware training (TF-MOT default 8-bit scheme)."""

    # Regex over layer names to quantize; empty = every layer TF-MOT supports,
    # plus tfbig's own configs for attention.
    layers: str = ""
    # Keep the zeros of a pruned model while quantizing (prune-preserving QAT).
    preserve_sparsity: bool = False


@dataclasses.dataclass(frozen=True)
class ClusterConfig(Checked):
    """Weight clustering (TF-MOT): each kernel keeps only `clusters` distinct values."""

    clusters: int = bounded(16, min=2)
    init: Literal["kmeans_plus_plus", "linear", "density_based", "random"] = "kmeans_plus_plus"
    layers: str = ""
    preserve_sparsity: bool = False


@dataclasses.dataclass(frozen=True)
class DistillConfig(Checked):
    """Knowledge distillation of the run (the teacher) into a `student` model.

    loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher/T || student/T).
    """

    # The student's `model:` section (required for distill), e.g.
    # {name: gpt, d_model: 64, num_layers: 1}. It trains on the teacher's data.
    student: Optional[ModelConfig] = None
    # A run directory or an exported SavedModel; empty = the run being compressed.
    teacher: str = ""
    alpha: float = bounded(0.1, min=0.0, max=1.0)
    temperature: float = bounded(2.0, min=0.0, min_exclusive=True)


COMPRESS_METHODS = ("prune", "qat", "ptq-dynamic", "ptq-float16", "ptq-int8", "cluster",
                    "distill")


@dataclasses.dataclass(frozen=True)
class CompressConfig(Checked):
    method: Literal[("none", *COMPRESS_METHODS)] = "none"
    # Optimizer steps of fine-tuning (or of training the student, for distill).
    steps: int = bounded(300, min=1)
    # Peak rate of the fine-tuning's cosine schedule; 0 = train.optimizer's.
    learning_rate: float = bounded(0.0, min=0.0)
    # Training examples that calibrate full-integer quantization.
    calibration_examples: int = bounded(256, min=1)
    # Timed single-example calls per latency measurement in the report.
    latency_runs: int = bounded(100, min=1)
    # Eval batches scored for the report; 0 = the whole eval split.
    eval_steps: int = bounded(0, min=0)
    prune: PruneConfig = dataclasses.field(default_factory=PruneConfig)
    qat: QATConfig = dataclasses.field(default_factory=QATConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)


# ------------------------------------------------------------------- pipeline

TFLITE_VARIANTS = ("float32", "float16", "dynamic_range", "int8")
SERVING_ENGINES = ("auto", "tensorflow_model_server", "embedded")


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Checked):
    """What `tfbig pipeline` does after training: export, validate, promote, serve, measure."""

    # The served model's name; empty = the run directory's name.
    model_name: str = ""
    # The model base path (integer version directories); empty = RUN_DIR/models/MODEL_NAME.
    model_base_path: str = ""
    onnx: bool = False
    tflite: list[Literal[TFLITE_VARIANTS]] = items()
    # An Ed25519 private key (PEM; `tfbig keys generate`) that signs the exported
    # version; validation then also checks the signature. Empty = unsigned.
    sign_key: str = ""
    # auto: tensorflow_model_server when it is installed, else tfbig's embedded server.
    engine: Literal[SERVING_ENGINES] = "auto"
    # Quality gates on the evaluated model (0 = none): below them nothing is exported.
    min_eval_accuracy: float = bounded(0.0, min=0.0, max=1.0)
    max_eval_perplexity: float = bounded(0.0, min=0.0)
    # Serving latency for the report: timed requests per point, per protocol.
    latency_concurrency: list[int] = items(1, 4, 16)
    latency_requests: int = bounded(200, min=1)
    # After promotion, delete all but this many newest versions (labelled ones
    # and rollback targets always stay); 0 = keep every version.
    keep_versions: int = bounded(0, min=0)
    # Serve with `tfbig serve --auth_token_file` (one bearer token per line); the pipeline's own
    # requests send the file's first token. Empty = no token asked for.
    auth_token_file: str = ""

    def check(self) -> None:
        if any(level < 1 for level in self.latency_concurrency):
            raise SectionError(self, "latency_concurrency", (
                f"{self.latency_concurrency} must hold positive numbers of concurrent "
                f"requests, e.g. [1, 4, 16]"))


# --------------------------------------------------------------------- output


@dataclasses.dataclass(frozen=True)
class OutputConfig(Checked):
    # The run directory. Relative paths are taken from the working directory.
    dir: str = "runs/default"


@dataclasses.dataclass(frozen=True)
class Config(Checked):
    model: ModelConfig = dataclasses.field(default_factory=GPTConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    compress: CompressConfig = dataclasses.field(default_factory=CompressConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)

    def check(self) -> None:
        """Rules across sections."""
        model, data = self.model, self.data
        if isinstance(model, GPTConfig):
            if data.name not in LANGUAGE_MODEL_DATA:
                raise SectionError(self, "data.name", (
                    f"the gpt model trains on language-model windows; set data.name to one of "
                    f"{', '.join(LANGUAGE_MODEL_DATA)}, got {data.name!r}"))
            if data.seq_len > model.max_len:
                raise SectionError(self, "data.seq_len", (
                    f"{data.seq_len} is longer than the model's position table "
                    f"(model.max_len={model.max_len}); lower data.seq_len or raise model.max_len"))
        elif data.name in LANGUAGE_MODEL_DATA:
            raise SectionError(self, "data.name", (
                f"{data.name!r} yields language-model windows, which only the gpt model trains "
                f"on; model.name is {model.name!r}"))
        if self.distribute.strategy == "dtensor":
            if model.name != "gpt":
                raise SectionError(self, "distribute.strategy", (
                    f"dtensor shards the gpt model only; got model.name={model.name!r}. "
                    f"Use distribute.strategy=mirrored for it."))
            if model.recompute:
                raise SectionError(self, "distribute.strategy", (
                    "dtensor shards the GPT's own block layers; set model.recompute=false"))
        if self.distribute.data_service.dispatcher and data.name != "tokens":
            raise SectionError(self, "distribute.data_service", (
                f"tfbig reads data.name 'tokens' through a tf.data service (a prepared "
                f"directory, whose shard visits the service's workers share out), not "
                f"{data.name!r}; prepare the text with `tfbig data prepare`, or unset "
                f"distribute.data_service.dispatcher"))
