"""TF Serving's export layout: ``<export_dir>/<name>/<version>/``, the files beside the
SavedModel under ``assets.extra/``, and version numbers. The writer (`tfnode.exports.write`)
and the reader (`tfnode.exports.read`) both depend on this module; the reader never
imports the writer (the writer loads the model it re-exports through the reader).
"""

import os
import re

from tfnode import files

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
METRICS = os.path.join(ASSETS_EXTRA, "metrics.json")  # relative to the version folder
# Batch sizes of the warmup requests: one image (a single REST call) and a small batch.
WARMUP_BATCH_SIZES = (1, 8)


def extra_file(version_dir, name):
    """The path of ``name`` (``metrics.json``, ``report.json``) in an export, or None.

    ``assets.extra/<name>``; exports written before 2026-12-03 kept ``metrics.json``
    beside ``saved_model.pb``, which is still read.
    """
    for path in (os.path.join(version_dir, ASSETS_EXTRA, name),
                 os.path.join(version_dir, name)):
        if os.path.isfile(path):
            return path
    return None


def next_version(model_base):
    """1 + the largest integer version folder under ``model_base`` (1 if there is none)."""
    if not os.path.isdir(model_base):
        return 1
    taken = [int(d) for d in os.listdir(model_base) if re.fullmatch(r"\d+", d)]
    return max(taken, default=0) + 1


def check_writable(export_dir):
    """Raises `ConfigError` (``export_dir``) unless ``export_dir`` exists or can be made,
    and is writable."""
    files.check_writable(export_dir, field="export_dir")
