"""Per-example arrays of every cell (distances, queries, masks), saved beside a shard's
report so that the merge of shards can recompute every number."""

import numpy as np

from tfnode import files

FILE = "per_example.npz"
_SEP = "|"


def save(path, arrays):
    """Writes ``{label: {(attack, key): {field: array}}}`` to ``path`` atomically."""
    flat = {_SEP.join((label, attack, key, field)): np.asarray(value)
            for label, cells in arrays.items() for (attack, key), fields in cells.items()
            for field, value in fields.items() if value is not None}
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **flat)


def load(path):
    """The dict `save` wrote."""
    out = {}
    with np.load(path) as data:
        for name in data.files:
            label, attack, key, field = name.split(_SEP)
            out.setdefault(label, {}).setdefault((attack, key), {})[field] = data[name]
    return out
