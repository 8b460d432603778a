"""The ``tf.data`` pipeline: a split's arrays as batches of ``(float32 image in [0, 1],
int64 label)``, with a validation split held out of the training split, seeded
shuffling, and a start after ``skip_batches`` for resumed runs. No augmentation is
applied: the paper trains without it."""

import tensorflow as tf

from tfnode.data import sources
from tfnode.errors import DataError


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
    images, labels = sources.load_arrays(name, "train" if split == "validation" else split,
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
    images, labels = sources.load_arrays(name, "train" if split == "validation" else split,
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
