"""Model builders by name: config + data spec -> a Keras functional model.

Every model has one input named `inputs` and one float32 output named
`logits`, so training, export and serving treat all families alike.
"""

from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

from tfbig.config import ConfigError
from tfbig.data.spec import DataSpec
from tfbig.models.cnn import build_cnn
from tfbig.models.gpt import build_gpt
from tfbig.models.mlp import build_mlp
from tfbig.models.rnn import build_lstm
from tfbig.models.transformer import build_transformer_encoder

# Classifier bodies: each returns a feature vector per example; the shared
# head below turns it into class logits.
CLASSIFIER_BODIES = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "lstm": build_lstm,
    "transformer_encoder": build_transformer_encoder,
}
MODEL_NAMES = sorted([*CLASSIFIER_BODIES, "gpt"])


def build_model(model_cfg, spec: DataSpec, *, name: str | None = None) -> keras.Model:
    """Build the model `model_cfg.name` for examples shaped like `spec`.

    Dropout layers get `tf.random.Generator` state (rather than stateless
    legacy ops) so the Trainer can checkpoint it and resume exactly.
    """
    keras.backend.experimental.enable_tf_random_generator()
    # Language models take any length up to max_len (decoding grows the input).
    shape = (None,) if spec.task == "lm" else spec.input_shape
    inputs = keras.Input(shape=shape, dtype=spec.input_dtype, name="inputs")
    if model_cfg.name == "gpt":
        outputs = build_gpt(model_cfg, spec, inputs)
    elif model_cfg.name in CLASSIFIER_BODIES:
        if spec.task != "classification":
            raise ConfigError(f"model.name: the {model_cfg.name} model is a classifier; got a "
                             f"{spec.task!r} data set")
        features = CLASSIFIER_BODIES[model_cfg.name](model_cfg, spec, inputs)
        outputs = layers.Dense(spec.num_classes, dtype="float32", name="logits")(features)
    else:
        raise ConfigError(f"unknown model {model_cfg.name!r}; known models: "
                         f"{', '.join(MODEL_NAMES)}")
    return keras.Model(inputs, outputs, name=name or model_cfg.name)
