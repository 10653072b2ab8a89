"""tfbig: a TensorFlow/Keras-native framework from model definition to production.

tfbig runs on Keras 2 (`tf_keras`) and makes `tf.keras` mean `tf_keras` too by
setting TF_USE_LEGACY_KERAS, which TensorFlow reads the first time `tf.keras`
is touched: importing tfbig after `import tensorflow` is fine. See
`tfbig.keras2` for when it is too late and where that is checked.
"""

import os

__version__ = "0.1.0"

os.environ["TF_USE_LEGACY_KERAS"] = "1"
