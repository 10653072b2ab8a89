"""The `batch` x `model` DTensor device mesh, and what each of its devices then holds.

Along `batch` the model is replicated (data parallelism); along `model` its
big weights are split (tensor parallelism) by the layout rules of the model
itself: the GPT's, Megatron-style, are `tfbig.models.gpt_layout`.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras as keras
from tensorflow.dtensor.python import accelerator_util
from tensorflow.experimental import dtensor

from tfbig.config import MeshConfig
from tfbig.distribute.devices import StrategyError, split_cpu

BATCH, MODEL = "batch", "model"
# DTensor's pass that combines all-reduces moves them past the optimizer's
# slot updates: a step then reads a slot before writing it, and the GPT's
# first optimizer update is silently lost (TF 2.21, SGD and Adam alike).
COMBINE_ALL_REDUCES = "DTENSOR_ENABLE_COMBINE_ALL_REDUCES_OPTIMIZATION"


def make_mesh(cfg: MeshConfig) -> dtensor.Mesh:
    """The `batch` x `model` mesh on GPUs if there are any, else on logical CPUs.

    Call before any TensorFlow op: only then can the CPU be split, or GPUs be
    paired with the host CPUs that DTensor's input pipelines run on.
    """
    os.environ.setdefault(COMBINE_ALL_REDUCES, "0")
    count = cfg.batch * cfg.model
    if tf.config.list_physical_devices("GPU"):
        devices = _gpus(count)
    else:
        try:
            devices = split_cpu(count)
        except StrategyError as error:
            raise StrategyError(
                f"distribute.mesh: {cfg.batch} (batch) x {cfg.model} (model) needs "
                f"{count} devices. {error}"
            ) from None
    return dtensor.create_mesh([(BATCH, cfg.batch), (MODEL, cfg.model)], devices=devices)


def _gpus(count: int) -> list[str]:
    available = len(tf.config.list_physical_devices("GPU"))
    if count > available:
        raise StrategyError(
            f"distribute.mesh: batch x model = {count} devices, but only {available} "
            f"GPUs are visible; make batch * model at most {available}"
        )
    if not accelerator_util.is_initialized():
        try:
            dtensor.initialize_accelerator_system("GPU")
        except ValueError:
            raise StrategyError(
                "distribute.strategy=dtensor on GPUs sets the devices up before "
                "TensorFlow starts; build the strategy before running any TensorFlow "
                "op, or start a fresh process"
            ) from None
    return [f"GPU:{i}" for i in range(count)]


def weight_bytes(model: keras.Model) -> dict:
    """Bytes of `model`'s weights: in total, and held by each device of the mesh.

    Read from the per-device components DTensor really keeps (`unpack`), so a
    weight sharded over `model` counts 1/model of its size on each device.
    """
    devices = dtensor.fetch_layout(model.weights[0]).mesh.num_local_devices()
    total = sharded = 0
    per_device, sharded_per_device = [0] * devices, [0] * devices
    for weight in model.weights:
        held = [part.shape.num_elements() * part.dtype.size
                for part in dtensor.unpack(weight.read_value())]
        full = weight.shape.num_elements() * weight.dtype.size
        total += full
        per_device = [a + b for a, b in zip(per_device, held)]
        if not dtensor.fetch_layout(weight).is_fully_replicated():
            sharded += full
            sharded_per_device = [a + b for a, b in zip(sharded_per_device, held)]
    return {"total": total, "per_device": per_device, "sharded_total": sharded,
            "sharded_per_device": sharded_per_device}
