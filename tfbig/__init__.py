"""tfbig: a TensorFlow/Keras-native framework from model definition to production.

TF Model Optimization works only with Keras 2, so tfbig runs on `tf_keras` and
makes `tf.keras` mean `tf_keras` too: TensorFlow reads TF_USE_LEGACY_KERAS the
first time `tf.keras` is touched, so it must be set before that moment.
"""

import os
import sys

__version__ = "0.1.0"

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def _check_keras_2() -> None:
    """Fail early if TensorFlow already bound `tf.keras` to Keras 3."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    keras_version = getattr(tf.keras, "__version__", "")
    if not keras_version.startswith("2."):
        raise ImportError(
            f"tfbig needs Keras 2 (tf_keras), but TensorFlow was already imported "
            f"with Keras {keras_version or '3'} as tf.keras. Import tfbig before "
            f"using tf.keras, or set TF_USE_LEGACY_KERAS=1 in the environment "
            f"before starting Python (e.g. `export TF_USE_LEGACY_KERAS=1`)."
        )


_check_keras_2()
