"""`tf.distribute` strategies by name, for training beyond one device (``--strategy``).

``default`` is TensorFlow's default strategy (one device); ``mirrored`` replicates over
the local GPUs (or the logical CPUs a test makes); ``multi_worker`` over several
processes or machines, each started with its ``TF_CONFIG`` (docs/scaling.md); ``tpu`` on
a Cloud TPU (untested here). Every strategy trains through one loop,
`tfnode.training.loop` (Keras 3's ``fit`` does not run under MultiWorkerMirroredStrategy,
keras-team/keras#20585). The batch size is the global one: each of the N replicas gets
``batch_size / N`` examples per step.

An adaptive solver's step size depends on its batch (one error norm for the whole
state), so data parallelism changes the numbers: each replica's sub-batch takes its
own steps. With per-sample steps (``per_sample_steps=True``) each sample's solve is
its own, and a mirrored run computes what one device computes (tested to 1e-5).
"""

import os

import tensorflow as tf

from tfnode import cluster
from tfnode.errors import ConfigError
from tfnode.registry import Registry

_STRATEGIES = Registry("strategy")


def _default(**_):
    return tf.distribute.get_strategy()


def _mirrored(**_):
    # All local GPUs; without any, every logical CPU device (one on a plain machine; a
    # test or a user can split the CPU into several with set_logical_device_configuration).
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


# How long one collective (a step's gradient all-reduce) may wait for the other workers
# before it fails: a worker that hangs, rather than dies, ends the run in bounded time. A
# killed worker is found sooner, by the coordination service's heartbeats. Generous: the
# first step traces and compiles, and an adaptive solver's step takes as long as its
# hardest batch.
COLLECTIVE_TIMEOUT_SECONDS = 600


def _multi_worker(collective_timeout=COLLECTIVE_TIMEOUT_SECONDS):
    if cluster.place() is None:
        raise ConfigError("strategy", "'multi_worker' needs TF_CONFIG (the cluster and this "
                          "worker's task) in the environment of every worker")
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout))


def _tpu(**_):
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
    """Raises a one-line `TfnodeError` for an unknown strategy name."""
    _STRATEGIES.lookup(name)


def get(name, **options):
    """A new `tf.distribute.Strategy` for ``name`` (``multi_worker`` takes
    ``collective_timeout``, seconds).

    A multi-worker strategy must be made before TensorFlow runs any op in the process.
    """
    return _STRATEGIES.lookup(name)(**options)


def worker(strategy):
    """``(index, count, is_chief)`` of this process among the strategy's workers: the
    chief (the ``chief`` task, else worker 0) alone writes a run's files."""
    place = (cluster.place() if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
             else None)
    index, count = place or (0, 1)
    return index, count, index == 0
