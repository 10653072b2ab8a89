"""A small ResNet (He et al. 2016, basic blocks) for small images.

Convolutions before BatchNorm have no bias: BatchNorm's offset makes it
redundant. A rank-2 input such as the 8x8 digits gets a channel axis.
"""

from __future__ import annotations

from tf_keras import layers

from tfbig.config import CNNConfig, ConfigError
from tfbig.data.spec import DataSpec

# Keras's default 0.99 leaves the moving statistics ~8% short of the data
# after 250 steps, which wrecks eval accuracy of short runs while train
# accuracy looks perfect; 0.9 (PyTorch's default) converges in tens of steps.
BN_MOMENTUM = 0.9


def conv_bn(x, filters: int, *, kernel: int, stride: int, relu: bool, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(x, filters: int, *, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, kernel=1, stride=stride, relu=False, name=f"{name}_proj")
    h = conv_bn(x, filters, kernel=3, stride=stride, relu=True, name=f"{name}_a")
    h = conv_bn(h, filters, kernel=3, stride=1, relu=False, name=f"{name}_b")
    h = layers.Add(name=f"{name}_add")([shortcut, h])
    return layers.ReLU(name=f"{name}_out")(h)


def image_input(inputs, spec: DataSpec):
    """Rank-3 images pass through; rank-2 (H, W) inputs get a channel axis."""
    if len(spec.input_shape) == 3:
        return inputs
    if len(spec.input_shape) == 2:
        return layers.Reshape(spec.input_shape + (1,), name="add_channel")(inputs)
    raise ConfigError(f"cnn takes images (H, W) or (H, W, C); got inputs of shape "
                     f"{spec.input_shape}")


def build_cnn(cfg: CNNConfig, spec: DataSpec, inputs):
    h = conv_bn(image_input(inputs, spec), cfg.filters[0], kernel=3, stride=1, relu=True,
                name="stem")
    for stage, filters in enumerate(cfg.filters):
        for block in range(cfg.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            h = residual_block(h, filters, stride=stride, name=f"stage{stage}_block{block}")
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    return layers.Dropout(cfg.dropout, name="dropout")(h)
