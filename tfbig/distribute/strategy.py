"""Build a `tf.distribute.Strategy` from the `distribute:` config section.

Each strategy kind is one small factory in `_FACTORIES`, so adding a kind
(multi-worker, parameter server, TPU, DTensor) never touches the Trainer: the
Trainer only uses `scope()`, `run()`, `num_replicas_in_sync` and the input
distribution functions, which every kind provides.
"""

from __future__ import annotations

import itertools
import os

import tensorflow as tf

from tfbig.config import DistributeConfig
from tfbig.distribute.devices import StrategyError, split_cpu
from tfbig.distribute.parameter_server import make_parameter_server_strategy

# Without GPUs, `mirrored` with devices=0 splits the CPU in two: the smallest
# split that exercises real cross-replica reduction.
DEFAULT_CPU_REPLICAS = 2

# Every strategy that all-reduces with collective ops draws its collective keys
# from its own range. Otherwise two strategies built one after the other in a
# process (train then compress, a teacher then a student) both start at group
# key 1 / instance key 100, TensorFlow pairs the new all-reduce with the old
# one's cached parameters ("Shape mismatch in the collective instance 100",
# tensorflow/tensorflow#62790) and aborts every collective in the process.
# TensorFlow's own tests set the same class attribute for the same reason
# (tensorflow/python/distribute/strategy_combinations.py).
COLLECTIVE_KEY_STRIDE = 100_000
_collective_key_ranges = itertools.count()


def make_strategy(cfg: DistributeConfig) -> tf.distribute.Strategy:
    """The strategy named by `cfg.strategy`, placed on GPUs when there are any."""
    try:
        factory = _FACTORIES[cfg.strategy]
    except KeyError:
        raise StrategyError(
            f"distribute.strategy: unknown strategy {cfg.strategy!r}; "
            f"known: {', '.join(sorted(_FACTORIES))}"
        ) from None
    return factory(cfg)


def _one_device(cfg: DistributeConfig) -> tf.distribute.Strategy:
    device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)


def _mirrored(cfg: DistributeConfig) -> tf.distribute.Strategy:
    # Physical first: listing *logical* devices starts the runtime, after
    # which the CPU can no longer be split.
    if not tf.config.list_physical_devices("GPU"):
        return new_collective_strategy(
            tf.distribute.MirroredStrategy, split_cpu(cfg.devices or DEFAULT_CPU_REPLICAS))
    gpus = tf.config.list_logical_devices("GPU")
    count = cfg.devices or len(gpus)
    if count > len(gpus):
        raise StrategyError(
            f"distribute.devices: {count} GPUs requested but only {len(gpus)} are visible"
        )
    return new_collective_strategy(tf.distribute.MirroredStrategy, [d.name for d in gpus[:count]])


def new_collective_strategy(strategy_class, *args, **kwargs) -> tf.distribute.Strategy:
    """`strategy_class(*args, **kwargs)` with collective keys no earlier strategy used.

    Processes of one cluster build their strategies in the same order, so they
    agree on the keys as collectives require.
    """
    strategy_class._collective_key_base = next(_collective_key_ranges) * COLLECTIVE_KEY_STRIDE
    return strategy_class(*args, **kwargs)


def _multi_worker(cfg: DistributeConfig) -> tf.distribute.Strategy:
    resolver = cluster_from_env("multi_worker")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=_COLLECTIVES[cfg.collective],
        timeout_seconds=cfg.collective_timeout_s or None,
    )
    return new_collective_strategy(
        tf.distribute.MultiWorkerMirroredStrategy,
        cluster_resolver=resolver, communication_options=options,
    )


_COLLECTIVES = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def cluster_from_env(kind: str) -> tf.distribute.cluster_resolver.TFConfigClusterResolver:
    """The cluster TF_CONFIG describes; an error saying how to get one if none."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not resolver.cluster_spec().as_dict():
        raise StrategyError(
            f"distribute.strategy={kind} needs a cluster: TF_CONFIG is not set (or has "
            f"no cluster). Start every task with `tfbig launch --workers N "
            f"{'--ps M ' if kind == 'parameter_server' else ''}-- tfbig train CONFIG`, "
            f"or set TF_CONFIG per task as on a real cluster."
        )
    return resolver


def _parameter_server(cfg: DistributeConfig) -> tf.distribute.Strategy:
    resolver = cluster_from_env("parameter_server")
    if resolver.task_type != "chief":
        raise StrategyError(
            f"distribute.strategy=parameter_server: only the chief task builds the "
            f"strategy; this is {resolver.task_type} {resolver.task_id}, which serves "
            f"the cluster (tfbig train does that by itself)"
        )
    return make_parameter_server_strategy(cfg, resolver)


def _tpu(cfg: DistributeConfig) -> tf.distribute.Strategy:
    tpu, looked_at = tpu_address(cfg)
    if tpu is None:
        raise StrategyError(
            f"distribute.strategy=tpu: no TPU configured; looked at {looked_at}. On Colab "
            f"choose Runtime > Change runtime type > TPU; on a TPU VM set "
            f"distribute.tpu=local; elsewhere set distribute.tpu to the TPU's name or "
            f"grpc:// address"
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StrategyError(
            f"distribute.strategy=tpu: cannot reach the TPU {tpu!r} (from {looked_at}): "
            f"{type(error).__name__}: {first_line}"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def tpu_address(cfg: DistributeConfig) -> tuple[str | None, str]:
    """The TPU to connect to and where that came from (for error messages).

    Never probes the network: without a configured TPU we fail at once rather
    than wait on a cloud metadata server that is not there.
    """
    if cfg.tpu:
        return cfg.tpu, "distribute.tpu"
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"], "COLAB_TPU_ADDR"
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"], "TPU_NAME"
    return None, "distribute.tpu, COLAB_TPU_ADDR and TPU_NAME"


def _dtensor(cfg: DistributeConfig) -> tf.distribute.Strategy:
    # Imported here: DTensor's strategy machinery is loaded only for a mesh.
    from tfbig.distribute.dtensor_strategy import make_mesh_strategy

    return make_mesh_strategy(cfg)


_FACTORIES = {
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
    "parameter_server": _parameter_server,
    "tpu": _tpu,
    "dtensor": _dtensor,
}
