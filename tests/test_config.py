"""Config loading, overrides, validation messages and saving."""

import dataclasses

import pytest
import yaml

from tfbig.config import (
    CNNConfig,
    Config,
    ConfigError,
    DataConfig,
    DistributeConfig,
    EarlyStoppingConfig,
    GPTConfig,
    PipelineConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
    replace,
    save_config,
    shipped_configs,
)


def write_yaml(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_packaged_configs_load():
    for name in ("gpt_tiny", "digits_cnn", "quickstart"):
        config = load_config(f"tfbig/configs/{name}.yaml")
        assert config.output.dir == f"runs/{name}"


def test_shipped_configs_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nowhere near the source tree
    shipped = shipped_configs()
    assert {"gpt_tiny", "digits_cnn", "quickstart", "gpt_laptop", "gpt2_small"} <= set(shipped)
    for name, path in shipped.items():
        assert load_config(name) == load_config(path)
        assert describe_config(path)  # `tfbig configs` shows it; one line says what it is
    assert load_config("gpt_tiny", ["train.steps=7"]).train.steps == 7


def test_a_file_always_means_itself_and_an_unknown_name_lists_the_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path, {"train": {"steps": 3}}, name="gpt_tiny")  # a file named like one
    assert load_config("gpt_tiny").train.steps == 3
    with pytest.raises(ConfigError) as error:
        load_config("gpt_tiyn")
    assert ("'gpt_tiyn' is neither a config file nor a shipped config (did you mean "
            "'gpt_tiny'?); shipped configs: digits_cnn, gpt2_small,") in str(error.value)
    with pytest.raises(ConfigError, match="config file 'gpt_tiyn.yaml' does not exist"):
        load_config("gpt_tiyn.yaml")  # a path, not a name


def test_defaults_and_model_selection():
    config = config_from_dict({"model": {"name": "gpt", "d_model": 64}})
    assert isinstance(config.model, GPTConfig)
    assert config.model.d_model == 64 and config.model.num_layers == 2
    assert config.train.optimizer.name == "adamw"


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = write_yaml(tmp_path, {"model": {"name": "mlp"}, "data": {"name": "digits"}})
    config = load_config(path, [
        "train.steps=100", "train.jit_compile=true", "model.hidden_units=[8, 4]",
        "train.optimizer.learning_rate=3e-4",
    ])
    assert config.train.steps == 100
    assert config.train.jit_compile is True
    assert config.model.hidden_units == [8, 4]
    assert config.train.optimizer.learning_rate == pytest.approx(3e-4)


@pytest.mark.parametrize("raw, message", [
    ({"train": {"stepz": 3}}, "train.stepz: unknown key; allowed keys here: steps"),
    ({"train": {"stepz": 3}}, "did you mean 'steps'?"),
    ({"train": {"steps": "ten"}}, "train.steps: expected an integer, got 'ten' (str)"),
    ({"train": {"steps": 0}}, "train.steps: 0 (int) is out of range; expected a value >= 1"),
    ({"model": {"name": "gtp"}}, "model.name: unknown model 'gtp'; known models: cnn, gpt, lstm, mlp, transformer_encoder (did you mean 'gpt'?)"),
    ({"train": {"precision": "fp8"}}, "train.precision: 'fp8' (str) is not allowed; choose one of 'float32', 'mixed_bfloat16', 'mixed_float16'"),
    ({"model": {"name": "gpt", "dropout": 1.5}}, "model.dropout: 1.5 (float) is out of range; expected a value >= 0.0 and <= 0.9"),
    ({"train": {"optimizer": {"learning_rate": 0}}}, "train.optimizer.learning_rate: 0.0 (float) is out of range; expected a value > 0.0"),
    ({"model": {"name": "gpt", "d_model": 65}}, "model.d_model: 65 is not divisible by model.num_heads=4"),
    ({"data": {"seq_len": 256}}, "data.seq_len: 256 is longer than the model's position table (model.max_len=128)"),
    ({"model": {"name": "cnn"}}, "data.name: 'text' yields language-model windows, which only the gpt model trains on"),
    ({"train": {"batch_size": 10, "grad_accum_steps": 3}}, "train.batch_size: 10 is not divisible by train.grad_accum_steps=3"),
    ({"train": {"jit_compile": "yes"}}, "train.jit_compile: expected true or false, got 'yes' (str)"),
    ({"model": {"name": "mlp", "hidden_units": 8}, "data": {"name": "digits"}}, "model.hidden_units: expected a list, got 8 (int)"),
    ({"model": {"name": "gpt", "recompute": True, "dropout": 0.1}}, "model.recompute: blocks recomputed in backprop would draw new dropout masks"),
    ({"distribute": {"strategy": "dtensor"}, "model": {"name": "cnn"}, "data": {"name": "digits"}}, "distribute.strategy: dtensor shards the gpt model only"),
    ({"train": {"early_stopping": {"metric": "loss"}}}, "train.early_stopping.metric: 'loss' is not an eval metric"),
    ({"pipeline": {"latency_concurrency": [1, 0]}}, "pipeline.latency_concurrency: [1, 0] must hold positive numbers"),
    ({"pipeline": {"tflite": ["int4"]}}, "pipeline.tflite[0]: 'int4' (str) is not allowed; choose one of 'float32'"),
    ({"bogus": {}}, "bogus: unknown key; allowed keys here: model, data, train, distribute, output"),
    ({"distribute": {"data_service": {"dispatcher": "10.0.0.5"}}}, "distribute.data_service.dispatcher: '10.0.0.5' is not a dispatcher address; expected grpc://HOST:PORT"),
    ({"distribute": {"data_service": {"dispatcher": "grpc://h:99999"}}}, "'grpc://h:99999' is not a dispatcher address"),
    ({"distribute": {"data_service": {"dispatcher": "grpc://[::1]:5050"}}}, "distribute.data_service: tfbig reads data.name 'tokens' through a tf.data service (a prepared directory, whose shard visits the service's workers share out), not 'text'"),
])
def test_validation_messages_name_key_value_and_allowed(raw, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert message in str(error.value)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="train.steps is not a section"):
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])


def test_saved_config_round_trips(tmp_path):
    config = config_from_dict({"model": {"name": "gpt", "d_model": 32}, "train": {"steps": 7}})
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp files left
    assert config_to_dict(load_config(path))["train"]["steps"] == 7


def test_replace_validates():
    config = config_from_dict({})
    assert replace(config, {"train.steps": 5}).train.steps == 5
    with pytest.raises(ConfigError, match="train.steps"):
        replace(config, {"train.steps": -1})


@pytest.mark.parametrize("build, message", [
    (lambda: TrainConfig(steps=0), "TrainConfig.steps: 0 (int) is out of range; expected a value >= 1"),
    (lambda: TrainConfig(batch_size=10, grad_accum_steps=3), "TrainConfig.batch_size: 10 is not divisible"),
    (lambda: TrainConfig(precision="fp8"), "TrainConfig.precision: 'fp8' (str) is not allowed"),
    (lambda: GPTConfig(d_model=65), "GPTConfig.d_model: 65 is not divisible by model.num_heads=4"),
    (lambda: EarlyStoppingConfig(metric="accuracy"), "EarlyStoppingConfig.metric: 'accuracy' is not an eval metric"),
    (lambda: PipelineConfig(latency_concurrency=[0]), "PipelineConfig.latency_concurrency"),
    (lambda: Config(data=DataConfig(seq_len=256)), "Config.data.seq_len: 256 is longer than the model's position table"),
    (lambda: Config(model=CNNConfig()), "Config.data.name: 'text' yields language-model windows"),
    (lambda: Config(model=GPTConfig(recompute=True), distribute=DistributeConfig(strategy="dtensor")),
     "dtensor shards the GPT's own block layers"),
])
def test_a_config_built_in_python_is_checked_as_a_loaded_one(build, message):
    with pytest.raises(ConfigError) as error:
        build()
    assert message in str(error.value)


def test_dataclasses_replace_checks_too():
    train = TrainConfig(batch_size=12, grad_accum_steps=3)
    with pytest.raises(ConfigError, match="TrainConfig.grad_accum_steps|TrainConfig.batch_size"):
        dataclasses.replace(train, grad_accum_steps=5)
