"""An evaluation's finished cells on disk: a killed `tools.evaluate`, run again, redoes none.

While it runs, `tfnode.evaluation` keeps ``<output_dir>/progress/``: for every model (by
its position in the run) and attack, each finished eps cell of a budget attack (its
numbers, its per-example arrays, and what the next eps continues from: the adversarials
carried forward and the examples still robust), and each finished attack as a whole.
Every file is written beside and renamed, so a kill leaves only complete cells. A rerun
with the same settings loads them instead of attacking again, and its report equals an
uninterrupted run's (every random draw of the budget attacks is keyed by the example and
the seed; a distance-minimizing attack is saved only when it has finished). The folder
is removed once the report is written.
"""

import hashlib
import json
import os
import re
import shutil

import numpy as np

from tfnode import files
from tfnode.errors import ConfigError

FOLDER = "progress"
_SETTINGS = "settings.json"


class Progress:
    """The finished cells of one evaluation (`FOLDER` under its output folder).

    Args:
      output_dir: the evaluation's report folder.
      settings: what makes two runs the same evaluation (its config, JSON-able); a
        folder holding another evaluation's cells is refused.
      log: where the resume line goes.
    """

    def __init__(self, output_dir, settings, log=print):
        self.folder = os.path.join(output_dir, FOLDER)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.resumed = False
        path = os.path.join(self.folder, _SETTINGS)
        if not os.path.isfile(path) or not self._cells():
            return  # nothing finished: whatever is there is not worth keeping
        with open(path) as f:
            saved = json.load(f)
        differ = files.differing_settings(saved, self.settings)
        if differ:
            raise ConfigError(
                "output_dir",
                f"{output_dir!r} holds the finished cells of an unfinished evaluation with "
                f"other settings ({', '.join(differ)}); run it again with the same settings "
                f"to finish it, or delete {self.folder} or pass another {{output_dir}}")
        self.resumed = True
        log(f"tfnode: resuming the evaluation in {output_dir}: its finished cells are read "
            f"from {self.folder}")

    def _cells(self):
        return [name for _, _, names in os.walk(self.folder) for name in names
                if name.endswith(".npz")]

    def _path(self, model, attack, name):
        safe = re.sub(r"[^\w.-]", "_", attack)
        return os.path.join(self.folder, f"model{model}", safe, f"{name}.npz")

    def save(self, model, attack, name, record, arrays):
        """Saves one finished unit: ``record`` (JSON-able) and ``{key: {field: array}}``."""
        flat = {"record": np.array(json.dumps(record, default=_plain))}
        for key, fields in arrays.items():
            for field, value in fields.items():
                if value is not None:
                    flat[f"a|{key}|{field}"] = np.asarray(value)
        if not self._cells():  # with the first cell (over what a run without any left)
            files.write_json(os.path.join(self.folder, _SETTINGS), self.settings)
        path = self._path(model, attack, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with files.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **flat)

    def load(self, model, attack, name):
        """``(record, {key: {field: array}})`` saved for that unit, or None."""
        path = self._path(model, attack, name)
        if not self.resumed or not os.path.isfile(path):
            return None
        arrays = {}
        with np.load(path) as data:
            record = json.loads(str(data["record"]))
            for entry in data.files:
                if entry.startswith("a|"):
                    _, key, field = entry.split("|", 2)
                    arrays.setdefault(key, {})[field] = data[entry]
        return record, arrays

    def clear(self):
        """Removes the folder (the report is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def model_fingerprint(path):
    """A sha256 over a model's files (``model.keras``; else an export's ``saved_model.pb``
    and ``variables/``): a model rewritten at the same path is another evaluation, and a
    fresh clone of committed cells and models (new modification times) is the same one."""
    for candidate in (path, os.path.join(path, "model.keras")):
        if os.path.isfile(candidate):
            return {"file": candidate, "sha256": _sha256([candidate])[:16]}
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        variables = os.path.join(path, "variables")
        names = sorted(os.listdir(variables)) if os.path.isdir(variables) else []
        return {"file": path, "sha256": _sha256(
            [os.path.join(path, "saved_model.pb")]
            + [os.path.join(variables, n) for n in names])[:16]}
    return {"file": path}


def _sha256(paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
