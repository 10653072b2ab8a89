"""Small training configs shared by the tests that need a trained run."""

from tfbig.config import config_from_dict

GPT = {"name": "gpt", "max_len": 32, "d_model": 32, "num_layers": 1, "num_heads": 2,
       "dropout": 0.0}
TEXT = {"name": "text", "seq_len": 32}


def make_config(run_dir, *, model=GPT, data=TEXT, strategy="one_device", **train):
    settings = {"steps": 20, "batch_size": 8, "steps_per_execution": 5, "log_every": 5,
                "eval_every": 0, "eval_steps": 4, "checkpoint_every": 10,
                "progress_bar": False, "optimizer": {"name": "adam", "learning_rate": 3e-3},
                "schedule": {"name": "constant"}}
    for key, value in train.items():
        if isinstance(value, dict):
            settings[key] = {**settings.get(key, {}), **value}
        else:
            settings[key] = value
    return config_from_dict({
        "model": model, "data": data, "train": settings,
        "distribute": {"strategy": strategy, "devices": 2},
        "output": {"dir": str(run_dir)},
    })
