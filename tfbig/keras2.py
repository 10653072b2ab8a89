"""tfbig's models are Keras 2 (`tf_keras`) models, and `tf.keras` must mean the same Keras.

TF Model Optimization works only with Keras 2, so tfbig builds, trains and
compresses models with `tf_keras`, and a `tf.keras` layer a user puts into one
must be a tf_keras layer too. TensorFlow decides what `tf.keras` means the
first time `tf.keras` is touched (not at `import tensorflow`), reading
TF_USE_LEGACY_KERAS then; `import tfbig` sets it. So only a program that
touched `tf.keras` before that, binding it to Keras 3, cannot use tfbig's
models, and the check runs where they are made (`tfbig.models`), not at
`import tfbig`: a program that only calls a server (`tfbig.serving.Client`)
needs no Keras and imports in any TensorFlow environment.
"""

from __future__ import annotations

import sys


def bound_keras() -> str | None:
    """The module `tf.keras` resolved to, or None if TensorFlow has not resolved it (yet)."""
    tf = sys.modules.get("tensorflow")
    keras = vars(tf).get("keras") if tf is not None else None
    # Read the module's dict, not its attributes: any attribute access resolves it.
    return vars(keras).get("__name__") if keras is not None else None


def require_keras_2() -> None:
    """Raise ImportError if `tf.keras` is already bound to Keras 3 rather than tf_keras."""
    name = bound_keras()
    if name is None or name.split(".")[0] == "tf_keras":
        return
    version = getattr(sys.modules.get("keras"), "__version__", "3")
    raise ImportError(
        f"tfbig's models need Keras 2 (tf_keras), but tf.keras was already bound to Keras "
        f"{version} ({name}) before tfbig was imported. Import tfbig before touching tf.keras, "
        f"or set TF_USE_LEGACY_KERAS=1 in the environment before starting Python "
        f"(e.g. `export TF_USE_LEGACY_KERAS=1`).")
