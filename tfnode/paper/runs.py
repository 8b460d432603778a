"""The runs a results page is made of: gathered from their files, and read alike.

`gather` reads the runs' files (a training export's ``metrics.json``, an evaluation's
``report.json``, a sweep's ``sweep.json``); the helpers below read one run's model the
same way for the claims (`tfnode.paper.verdicts`) and the page (`tfnode.paper.page`);
`joint_report` joins runs of the same models into one.
"""

import glob
import json
import os

from tfnode.errors import ConfigError
from tfnode.evaluation import outcomes
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


def run_name(report):
    """A run's name: its folder's name (the name a claim declares)."""
    return os.path.basename(os.path.normpath(os.path.dirname(report["_path"])))


def joint_report(reports):
    """The per-example worst case over several runs' attacks, as one report: the runs'
    models matched by path, on the images every run attacked (the first ``n`` of the
    same dataset split, ``n`` the smallest run's). None where the runs differ in dataset
    or split, or a model of the first run is missing from another.

    The joint report holds, per model, each run's budget attacks (a name two runs share
    is prefixed with its run's name) with their cells cut to ``n`` images, and a
    ``worst_case`` entry at every eps all runs have; `robust_mask` reads it as any
    report's.
    """
    first = reports[0]
    if any((r["dataset"], r["split"]) != (first["dataset"], first["split"]) for r in reports):
        return None
    n = min(r["num_examples"] for r in reports)
    keys = set.intersection(*({outcomes.eps_key(e) for e in r["eps"]} for r in reports))
    models_out = {}
    for label, res in first["models"].items():
        path = os.path.normpath((res.get("info") or {}).get("path") or label)
        parts = [next((m for m in r["models"].values() if os.path.normpath(
            (m.get("info") or {}).get("path") or "") == path), None) for r in reports]
        if any(p is None for p in parts):
            return None
        attacks, per_key = {}, {k: [] for k in keys}
        for report, part in zip(reports, parts):
            for name in outcomes.budget_attacks(part):
                attack = part["attacks"][name]
                joint = name if name not in attacks else f"{run_name(report)}/{name}"
                attacks[joint] = {"meta": {k: v for k, v in attack["meta"].items()
                                           if k != "survivors_of"},
                                  "cells": {k: {"robust": outcomes.encode(
                                      outcomes.decode(c["robust"])[:n])}
                                      for k, c in attack["cells"].items() if k in keys}}
                for k in attacks[joint]["cells"]:
                    per_key[k].append(joint)
        models_out[label] = {"info": res.get("info") or {}, "attacks": attacks,
                             "clean_correct": outcomes.encode(
                                 outcomes.decode(res["clean_correct"])[:n]),
                             "worst_case": {k: {"attacks": names}
                                            for k, names in per_key.items() if names}}
    folders = " + ".join(os.path.dirname(r["_path"]) for r in reports)
    return {"_path": os.path.join(folders, "report.json"), "num_examples": n,
            "dataset": first["dataset"], "split": first["split"], "models": models_out}


def fingerprints_of(gathered):
    """``{model path: fingerprint}`` of every model the runs cite that is on disk,
    computed here from its weights (`tfnode.exports.read.fingerprint`): the page names a
    model by what its file holds, not by what a run recorded (a metrics.json written
    before training recorded one has none, and runs made before the fingerprint took
    each weight's own name recorded another digest)."""
    from tfnode.exports import read

    paths = {os.path.normpath(m["_run"]) for m in gathered["training"]}
    paths |= {os.path.normpath(res["info"]["path"]) for report in gathered["evaluations"]
              for res in report["models"].values() if (res.get("info") or {}).get("path")}
    out = {}
    for path in sorted(paths):
        if any(os.path.isfile(f) for f in (os.path.join(path, "model.keras"),
                                           os.path.join(path, "saved_model.pb"))) or (
                path.endswith(".keras") and os.path.isfile(path)):
            out[path] = read.load_model(path)[1]["fingerprint"]
    return out
