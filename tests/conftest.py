"""Shared fixtures: --run-slow, generated datasets in the exact raw formats."""

import gzip
import hashlib
import os
import pickle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfnode import data  # noqa: E402
from tfnode.data import datasets  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def idx_bytes(array):
    """The bytes of an unsigned-byte IDX file holding ``array``."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def make_idx_dataset(folder, *, n_train=64, n_test=32, gz=False, seed=0):
    """Writes the four MNIST-format IDX files; returns {file name: md5 of content}."""
    rng = np.random.default_rng(seed)
    md5 = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        for fname, array in zip(datasets.IDX_FILES[split], (images, labels)):
            content = idx_bytes(array)
            md5[fname] = hashlib.md5(content).hexdigest()
            path = os.path.join(folder, fname + (".gz" if gz else ""))
            with (gzip.open if gz else open)(path, "wb") as f:
                f.write(content)
    return md5


def make_cifar_dataset(folder, *, per_batch=8, seed=0):
    """Writes cifar-10-batches-py/ with 6 small batches; returns {file: md5}, arrays."""
    rng = np.random.default_rng(seed)
    batch_dir = os.path.join(folder, datasets.CIFAR_DIR)
    os.makedirs(batch_dir, exist_ok=True)
    md5, arrays = {}, {}
    for fname in datasets.CIFAR_BATCHES["train"] + datasets.CIFAR_BATCHES["test"]:
        images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(per_batch,)).tolist()
        # The python version stores each image as 3072 bytes in CHW order.
        batch = {b"batch_label": fname.encode(), b"labels": labels,
                 b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, 3072),
                 b"filenames": [b"x.png"] * per_batch}
        content = pickle.dumps(batch, protocol=2)
        with open(os.path.join(batch_dir, fname), "wb") as f:
            f.write(content)
        md5[fname] = hashlib.md5(content).hexdigest()
        arrays[fname] = (images, np.asarray(labels))
    return md5, arrays


def trust_md5(monkeypatch, name, md5):
    """Makes dataset ``name`` accept files with these md5s (generated test data)."""
    monkeypatch.setitem(data.DATASETS, name, data.DATASETS[name].__class__(
        **{**data.DATASETS[name].__dict__, "md5": {**data.DATASETS[name].md5, **md5}}))


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    """A data dir with generated MNIST-format files, trusted by the loader."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(folder)))
    monkeypatch.setenv("TFNODE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return str(folder)


# What a test's child process runs first: TEST_LOGICAL_CPUS logical CPU devices (before
# TensorFlow starts, as it must), then the generated MNIST files' md5s (TEST_MNIST_MD5)
# trusted as the fixtures trust them in-process.
CHILD_PRELUDE = """
import json, os, sys
import tensorflow as tf
if os.environ.get("TEST_LOGICAL_CPUS"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(os.environ["TEST_LOGICAL_CPUS"]))
from tfnode import data
md5 = json.loads(os.environ["TEST_MNIST_MD5"])
info = data.DATASETS["mnist"]
data.DATASETS["mnist"] = info.__class__(**{**info.__dict__, "md5": {**info.md5, **md5}})
"""


def child_mnist(tmp_path, **extra_env):
    """Generated MNIST files for child processes: ``(folder, environment)``."""
    import json

    folder = tmp_path / "mnist"
    folder.mkdir()
    md5 = make_idx_dataset(str(folder))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TEST_MNIST_MD5": json.dumps(md5), "PYTHONPATH": repo,
           "TFNODE_DATA_DIR": str(tmp_path / "cache"), "TFDS_DATA_DIR": str(tmp_path / "tfds"),
           **extra_env}
    env.pop("TF_CONFIG", None)
    return str(folder), env


def h5_arrays(path):
    """Every dataset of an HDF5 file (a Keras weights file), by its path in the file."""
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: found.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                     else None)
    return found


def train_run(*, record=None, log=print, callbacks=(), verbose=1, **fields):
    """`tfnode.training.train` of ``TrainConfig(**fields)``: the tests' runs as flat
    dicts of fields, which they vary with ``{**run, "epochs": 2}``."""
    from tfnode import training

    return training.train(training.TrainConfig(**fields), record=record, log=log,
                          callbacks=callbacks, verbose=verbose)
