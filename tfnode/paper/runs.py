"""The runs a results page is made of: gathered from their files, and read alike.

`gather` reads the runs' files (a training export's ``metrics.json``, an evaluation's
``report.json``, a sweep's ``sweep.json``); the helpers below read one run's model the
same way for the claims (`tfnode.paper.verdicts`) and the page (`tfnode.paper.page`).
"""

import glob
import json
import os

from tfnode.errors import ConfigError
from tfnode.exports import layout

RUN_FILES = ("sweep.json", "report.json", "metrics.json")


def _run_files(path):
    """The run files at ``path`` (a file itself, or those in a folder)."""
    if os.path.isfile(path):
        return [path] if os.path.basename(path) in RUN_FILES else []
    # An export's metrics.json is under assets.extra/ (beside saved_model.pb in older
    # ones); the report.json an export carries there is not a run of its own.
    found = [os.path.join(path, f) for f in RUN_FILES[:2] if os.path.isfile(os.path.join(path, f))]
    metrics = layout.extra_file(path, "metrics.json")
    return found + ([metrics] if metrics else [])


def gather(patterns):
    """Reads every run named by ``patterns`` (folders, files or globs).

    Returns:
      ``{"training": [...], "evaluations": [...], "sweeps": [...]}``, each entry the
      file's dict with ``"_path"``, the file it came from, and ``"_run"``, the run's
      folder (an export's version folder); in the order given.

    Raises:
      ConfigError: (``runs``) a pattern that names no run, or a file that is not valid
        JSON.
    """
    out = {"training": [], "evaluations": [], "sweeps": []}
    kinds = {"metrics.json": "training", "report.json": "evaluations",
             "sweep.json": "sweeps"}
    seen = set()
    for pattern in patterns:
        found = [f for p in sorted(glob.glob(pattern)) or [pattern] for f in _run_files(p)]
        if not found:
            raise ConfigError("runs", f"{pattern!r} names no run: expected folders or files "
                              f"with one of {list(RUN_FILES)}")
        for path in found:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            try:
                with open(path) as f:
                    entry = json.load(f)
            except (OSError, ValueError) as err:
                raise ConfigError("runs", f"{path!r}: cannot read it ({err}); delete or "
                                  "re-create that run") from None
            folder = os.path.dirname(path)
            if os.path.basename(folder) == layout.ASSETS_EXTRA:  # an export's metrics
                folder = os.path.dirname(folder)
            out[kinds[os.path.basename(path)]].append({**entry, "_path": path,
                                                       "_run": folder})
    return out


def model_name(result, label):
    """The model's registered name, and its defense if it was adversarially trained."""
    trained = trained_info(result)
    name = trained.get("model") or label
    return f"{name} ({trained['defense']})" if trained.get("defense") else name


def options_text(options):
    """Model options as ``name=value, ...`` sorted by name; ``-`` for none."""
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "-"


def trained_info(res):
    """What a report says of its model's training; ``defense`` read from the model's
    ``metrics.json`` for reports written before the report carried it."""
    info = res.get("info") or {}
    trained = dict(info.get("trained") or {})
    metrics = layout.extra_file(info.get("path") or "", "metrics.json")
    if "defense" not in trained and metrics:
        try:
            with open(metrics) as f:
                trained["defense"] = json.load(f).get("defense")
        except (OSError, ValueError):
            pass  # Unknown; the model stays in its family as before.
    return trained
