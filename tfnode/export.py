"""SavedModel export in TF Serving's layout ``<export_dir>/<name>/<version>/``."""

import os
import re

import keras
import tensorflow as tf

from tfnode import files, layers
from tfnode.errors import TfnodeError


def next_version(model_base):
    """1 + the largest integer version folder under ``model_base`` (1 if there is none)."""
    if not os.path.isdir(model_base):
        return 1
    taken = [int(d) for d in os.listdir(model_base) if re.fullmatch(r"\d+", d)]
    return max(taken, default=0) + 1


def check_writable(export_dir):
    """Raises `TfnodeError` unless ``export_dir`` exists or can be made, and is writable."""
    files.check_writable(export_dir, flag="--export_dir")


def serving_function(model):
    """``images float32 [N, H, W, C] in [0, 1] -> {"logits", "probabilities"}``."""

    def serve(images):
        logits = model(images, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    return serve


def export(model, export_dir, name, *, version=None, extra_files=None):
    """Exports ``model`` as a SavedModel with a ``serving_default`` signature.

    The signature takes ``images``: float32 ``[None, H, W, C]`` in [0, 1], and returns
    ``logits`` and ``probabilities``. The version folder is written under a temporary
    name and renamed at the end, so TF Serving never loads a half-written version.

    Args:
      model: a built Keras model from images to logits.
      export_dir: base folder (``savedmodels``).
      name: model name (``node_mnist``).
      version: integer version; default is the next free one.
      extra_files: ``{file name: callable(path)}`` written into the version folder
        before the rename (e.g. ``metrics.json``, ``model.keras``).

    Returns:
      The path of the version folder.
    """
    check_writable(export_dir)
    model_base = os.path.join(export_dir, name)
    version = next_version(model_base) if version is None else int(version)
    path = os.path.join(model_base, str(version))
    if os.path.exists(path):
        raise TfnodeError(f"export version {path!r} exists already; versions are never "
                          "overwritten")
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="images")
    try:
        # No XLA-compiled functions in the SavedModel: TF Serving's XLA:CPU JIT is off
        # by default, and a graph that needs it would fail at its first request.
        with files.atomic_path(path) as tmp, layers.no_xla():
            archive.add_endpoint("serving_default", serving_function(model),
                                 input_signature=[spec])
            archive.write_out(tmp, verbose=False)
            for fname, writer in (extra_files or {}).items():
                writer(os.path.join(tmp, fname))
    except FileExistsError:
        raise TfnodeError(f"export version {path!r} was written by another run meanwhile; "
                          "nothing was overwritten, run again for the next version") from None
    return path
