"""The raw file formats: LeCun's IDX files (MNIST, Fashion-MNIST; plain or ``.gz``) and the
CIFAR-10 python pickle batches. Their readers check every file's content against its
known md5 (of the uncompressed content, so a re-compressed ``.gz`` is accepted) and say
what to do with a damaged file; their parsers turn bytes into numpy arrays."""

import gzip
import hashlib
import os
import pickle
import zlib

import numpy as np

from tfnode.data import datasets
from tfnode.errors import DataError


def check_md5(ds_info, fname, content, path):
    """Raises a `DataError` naming ``path`` unless ``content`` has raw file ``fname``'s md5."""
    want = ds_info.md5[fname]
    got = hashlib.md5(content).hexdigest()
    if got != want:
        raise DataError(f"{path}: md5 of its content is {got}, expected {want}: the file is "
                        f"damaged or not the original; {_what_to_do(path, ds_info)}")


def _what_to_do(path, ds_info):
    """What to do with a damaged file: delete it, and where it comes from again."""
    cache = os.path.abspath(datasets.cache_dir())
    if os.path.abspath(path).startswith(cache + os.sep):
        return ("delete it: it is in tfnode's download cache, and the next run fetches it "
                f"again ({ds_info.how_to_get})")
    return f"delete it and get it again from {ds_info.how_to_get}"


def read_idx(ds_info, path):
    """Parses an IDX file (LeCun's MNIST format), plain or gzipped."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError, zlib.error) as err:  # truncated or damaged gzip, disk errors
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err}); "
                        f"{_what_to_do(path, ds_info)}") from None
    fname = os.path.basename(path).removesuffix(".gz")
    check_md5(ds_info, fname, content, path)
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


def read_cifar(ds_info, split, batch_dir):
    """Reads the CIFAR-10 python batches of ``split`` from ``batch_dir``, concatenated."""
    images, labels = [], []
    for fname in datasets.CIFAR_BATCHES[split]:
        path = os.path.join(batch_dir, fname)
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing from {batch_dir}; get the full folder from "
                            f"{ds_info.how_to_get}")
        with open(path, "rb") as f:
            content = f.read()
        check_md5(ds_info, fname, content, path)
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
