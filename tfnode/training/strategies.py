"""`tf.distribute` strategies by name, for training beyond one device (``--strategy``).

``default`` is TensorFlow's default strategy (one device); ``mirrored`` replicates over
the local GPUs (or the logical CPUs a test makes); ``multi_worker`` over several
machines, each started with its ``TF_CONFIG`` (refused for now: Keras 3's fit does not
run under it, see `MULTI_WORKER_BLOCKED`); ``tpu`` on a Cloud TPU (untested here). The batch size is
the global one: each of the N replicas gets ``batch_size / N`` examples per step.

An adaptive solver's step size depends on its batch (one error norm for the whole
state), so data parallelism changes the numbers: each replica's sub-batch takes its
own steps. With per-sample steps (``per_sample_steps=True``) each sample's solve is
its own, and a mirrored run computes what one device computes (tested to 1e-5).
"""

import json
import os

import tensorflow as tf

from tfnode.errors import ConfigError, TfnodeError
from tfnode.registry import Registry

_STRATEGIES = Registry("strategy")


def _default():
    return tf.distribute.get_strategy()


def _mirrored():
    # All local GPUs; without any, every logical CPU device (one on a plain machine; a
    # test or a user can split the CPU into several with set_logical_device_configuration).
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


# Keras 3's fit does not run under MultiWorkerMirroredStrategy: it reduces each step's
# scalar logs with strategy.reduce("MEAN", v, axis=0), which fails for scalars
# (keras-team/keras#20585, open since TF 2.16 made Keras 3 the default). The strategy is
# kept so that the flag and the TF_CONFIG checks are in place when Keras fixes it; until then `check` refuses it in one line. (When it runs, only one worker
# may write the export: worker 0, from strategy.cluster_resolver.)
MULTI_WORKER_BLOCKED = (
    "'multi_worker': Keras 3's fit does not run under "
    "MultiWorkerMirroredStrategy (its per-step log reduction fails; keras-team/keras#20585, "
    "open); use 'mirrored' on one machine")


def _multi_worker():
    if not os.environ.get("TF_CONFIG"):
        raise ConfigError("strategy", "'multi_worker' needs TF_CONFIG (the cluster and this "
                          "worker's task) in the environment of every worker")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError as err:
        raise TfnodeError(f"TF_CONFIG is not JSON ({err})") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tpu():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as err:
        raise ConfigError("strategy",
                          f"'tpu': no TPU found ({str(err).splitlines()[0]})") from None
    return tf.distribute.TPUStrategy(resolver)


for _name, _make in (("default", _default), ("mirrored", _mirrored),
                     ("multi_worker", _multi_worker), ("tpu", _tpu)):
    _STRATEGIES.add(_name, _make)


def available():
    """The strategy names, in order."""
    return list(_STRATEGIES)


def check(name):
    """Raises a one-line `TfnodeError` for an unknown strategy name, or a `ConfigError`
    (``strategy``) for one that cannot run with this Keras (``multi_worker``)."""
    _STRATEGIES.lookup(name)
    if name == "multi_worker":
        raise ConfigError("strategy", MULTI_WORKER_BLOCKED)


def get(name):
    """A new `tf.distribute.Strategy` for ``name``."""
    return _STRATEGIES.lookup(name)()
