"""Load a config from YAML, apply `--set key=value` overrides, validate, save.

Validation walks the dataclasses in `schema` and reports the first problem as a
`ConfigError` naming the dotted key, the bad value and what is allowed, so a
typo in a YAML file never surfaces as a traceback from inside TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
import re
import tempfile
import types
import typing
from typing import Any, Iterable, Literal, Union

import yaml

from tfbig.config import schema
from tfbig.errors import UsageError
from tfbig.rundir import RunDir


class ConfigError(UsageError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


# ------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> schema.Config:
    """Read a YAML config file (or a shipped config by name), apply overrides, validate."""
    path = resolve_config_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections "
            f"(model, data, train, ...), got {type(raw).__name__}"
        )
    run_dir = run_directory_of(path)
    if run_dir is not None and isinstance(raw.get("output", {}), dict):
        raw = {**raw, "output": {**raw.get("output", {}), "dir": run_dir}}
    return config_from_dict(apply_overrides(raw, overrides))


def shipped_configs() -> dict[str, str]:
    """Name -> path of each config that ships inside the tfbig package (tfbig/configs/).

    Found through importlib.resources rather than a path into the source tree,
    so a pip-installed tfbig finds them wherever site-packages is.
    """
    directory = importlib.resources.files("tfbig") / "configs"
    return {entry.name[: -len(".yaml")]: os.fspath(entry)
            for entry in sorted(directory.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")}


def describe_config(path: str | os.PathLike) -> str:
    """A config's one-line description: its first comment line, without the `#`."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return ""


def resolve_config_path(path: str | os.PathLike) -> str:
    """`path` itself, or the shipped config it names (`gpt_tiny` -> .../tfbig/configs/gpt_tiny.yaml).

    Only a bare name is looked up: no path separator, no .yaml/.yml suffix and no
    such file here, so an existing file or any real path always means itself.
    """
    path = os.fspath(path)
    bare = (os.sep not in path and "/" not in path
            and not path.endswith((".yaml", ".yml")) and not os.path.exists(path))
    if not bare:
        return path
    shipped = shipped_configs()
    if path not in shipped:
        raise ConfigError(
            f"{path!r} is neither a config file nor a shipped config"
            f"{_suggestion(path, shipped)}; shipped configs: {', '.join(shipped)} "
            f"(tfbig configs lists them), or give the path of a YAML file"
        )
    return shipped[path]


def run_directory_of(path: str | os.PathLike) -> str | None:
    """The run directory whose own config.yaml `path` is, else None.

    A run's config.yaml means that run wherever the directory now is: its saved
    `output.dir` names where the run was made, which after `cp -r runs/a runs/b`
    is another run. So loading it points `output.dir` at the file's directory
    (overrides such as --output-dir still win).
    """
    directory = os.path.dirname(os.fspath(path)) or os.curdir
    if os.path.basename(os.fspath(path)) != RunDir.config.name:
        return None
    if not RunDir(directory).has_trained():
        return None
    return directory


def config_from_dict(raw: dict) -> schema.Config:
    """Validate a plain nested dict and turn it into a `Config`."""
    config = _build(schema.Config, _with_strategy_defaults(raw), prefix="")
    _check_consistency(config)
    return config


def _with_strategy_defaults(raw: dict) -> dict:
    """Defaults that depend on the strategy; values the user set always win.

    TPUs compute in bfloat16 natively, so a TPU run trains in mixed_bfloat16
    unless the config names a precision.
    """
    distribute = raw.get("distribute") or {}
    train = raw.get("train") or {}
    if not isinstance(distribute, dict) or not isinstance(train, dict):
        return raw  # _build reports the malformed section
    if distribute.get("strategy") == "tpu" and "precision" not in train:
        return {**raw, "train": {**train, "precision": "mixed_bfloat16"}}
    return raw


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of `raw` with each `a.b.c=value` override applied.

    Values are parsed as YAML, so `100` is an int, `true` a bool and `[1, 2]` a
    list, exactly as if they had been written in the file.
    """
    result = _deep_copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {override!r} must look like key=value, e.g. train.steps=100"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {override!r}: value is not valid YAML: {e}") from None
        _set_dotted(result, key.strip(), value)
    return result


def _set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])} is not a section (setting {key})")
        node = child
    node[parts[-1]] = value


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# ---------------------------------------------------------------- validation


def _build(cls: type, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, "
            f"got {_show(raw)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), key, fields))
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], prefix + name, field)
    return cls(**values)


def _convert(hint, value, key: str, field=None):
    origin = typing.get_origin(hint)
    if hint is schema.ModelConfig:
        return _build_model(value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {_show(value)} is not allowed; "
                f"choose one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if set(args) == set(typing.get_args(schema.ModelConfig)):  # Optional[ModelConfig]
            return _build_model(value, key)
        return _convert(args[0], value, key, field)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    converted = _scalar(hint, value, key)
    if field is not None:
        _check_range(converted, key, field.metadata)
    return converted


def _scalar(hint, value, key: str):
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `3e-4` (no dot) as a string; accept it as a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {_show(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_show(value)}")
    raise TypeError(f"schema field {key} has unsupported type {hint!r}")


def _check_range(value, key: str, metadata) -> None:
    low, high = metadata.get("min"), metadata.get("max")
    exclusive = metadata.get("min_exclusive", False)
    too_low = low is not None and (value <= low if exclusive else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return
    lower = f"> {low}" if exclusive else f">= {low}"
    if low is not None and high is not None:
        allowed = f"a value {lower} and <= {high}"
    elif low is not None:
        allowed = f"a value {lower}"
    else:
        allowed = f"a value <= {high}"
    raise ConfigError(f"{key}: {_show(value)} is out of range; expected {allowed}")


def _build_model(raw, key: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping with a `name`, got {_show(raw)}")
    name = raw.get("name", "gpt")
    if name not in schema.MODEL_CONFIGS:
        raise ConfigError(
            f"{key}.name: unknown model {name!r}; "
            f"known models: {', '.join(sorted(schema.MODEL_CONFIGS))}"
            + _suggestion(name, schema.MODEL_CONFIGS)
        )
    return _build(schema.MODEL_CONFIGS[name], raw, key + ".")


def _unknown_key_message(key: str, name, fields) -> str:
    return (
        f"{key}: unknown key; allowed keys here: {', '.join(fields)}"
        + _suggestion(str(name), fields)
    )


def _suggestion(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_consistency(config: schema.Config) -> None:
    """Checks that involve more than one field."""
    model, train = config.model, config.train
    if hasattr(model, "num_heads") and model.d_model % model.num_heads:
        raise ConfigError(
            f"model.d_model: {model.d_model} is not divisible by model.num_heads="
            f"{model.num_heads}; each attention head needs d_model / num_heads dims"
        )
    if isinstance(model, schema.GPTConfig):
        if config.data.name not in schema.LANGUAGE_MODEL_DATA:
            raise ConfigError(
                f"data.name: the gpt model trains on language-model windows; set data.name "
                f"to one of {', '.join(schema.LANGUAGE_MODEL_DATA)}, got {config.data.name!r}"
            )
        if config.data.seq_len > model.max_len:
            raise ConfigError(
                f"data.seq_len: {config.data.seq_len} is longer than the model's "
                f"position table (model.max_len={model.max_len}); "
                f"lower data.seq_len or raise model.max_len"
            )
    elif config.data.name in schema.LANGUAGE_MODEL_DATA:
        raise ConfigError(
            f"data.name: {config.data.name!r} yields language-model windows, which only the gpt "
            f"model trains on; model.name is {model.name!r}"
        )
    if train.batch_size % train.grad_accum_steps:
        raise ConfigError(
            f"train.batch_size: {train.batch_size} is not divisible by "
            f"train.grad_accum_steps={train.grad_accum_steps}; each step's batch is "
            f"split into grad_accum_steps equal micro-batches"
        )
    if any(level < 1 for level in config.pipeline.latency_concurrency):
        raise ConfigError(
            f"pipeline.latency_concurrency: {config.pipeline.latency_concurrency} must hold "
            f"positive numbers of concurrent requests, e.g. [1, 4, 16]"
        )
    _check_data_service(config)
    _check_prepare(config.data)
    if config.train.early_stopping.metric and not config.train.early_stopping.metric.startswith("eval_"):
        raise ConfigError(
            f"train.early_stopping.metric: {config.train.early_stopping.metric!r} is "
            f"not an eval metric; use one of eval_loss, eval_accuracy, eval_perplexity"
        )


_DISPATCHER = re.compile(r"(grpc://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")


def _check_data_service(config: schema.Config) -> None:
    dispatcher = config.distribute.data_service.dispatcher
    if not dispatcher:
        return
    address = _DISPATCHER.fullmatch(dispatcher)
    if not address or not 0 < int(address.group(3)) < 65536:
        raise ConfigError(
            f"distribute.data_service.dispatcher: {dispatcher!r} is not a dispatcher address; "
            f"expected grpc://HOST:PORT, e.g. grpc://10.0.0.5:5050"
        )
    if config.data.name != "tokens":
        raise ConfigError(
            f"distribute.data_service: tfbig reads data.name 'tokens' through a tf.data service "
            f"(a prepared directory, whose shard visits the service's workers share out), not "
            f"{config.data.name!r}; prepare the text with `tfbig data prepare`, or unset "
            f"distribute.data_service.dispatcher"
        )


def _check_prepare(data: schema.DataConfig) -> None:
    if data.prepare is None:
        return
    if data.name != "tokens":
        raise ConfigError(
            f"data.prepare: the pipeline prepares a token dataset for data.name 'tokens', not "
            f"{data.name!r}; set data.name: tokens, or remove data.prepare"
        )
    if not data.prepare.sources:
        raise ConfigError("data.prepare.sources: name the corpus to prepare: files, globs or "
                          "directories, e.g. [corpus/, 'stdlib:json']")
    if len(data.paths) > 1:
        raise ConfigError(
            f"data.paths: data.prepare writes one dataset directory, got {len(data.paths)} paths; "
            f"name one (or none: RUN/dataset)"
        )


# -------------------------------------------------------------------- saving


def config_to_dict(config) -> dict:
    """A plain nested dict of the config, the inverse of `config_from_dict`."""
    return dataclasses.asdict(config)


def dump_config(config: schema.Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: schema.Config, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump_config(config))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def replace(config: schema.Config, changes: dict[str, Any]) -> schema.Config:
    """A validated copy of `config` with dotted keys changed: replace(c, {"train.steps": 5})."""
    raw = config_to_dict(config)
    for key, value in changes.items():
        _set_dotted(raw, key, _deep_copy(value))
    return config_from_dict(raw)
