"""Sharded evaluations: each shard's per-example arrays, and the merge into one report.

``tools.evaluate --shard=i/N`` (i from 0) evaluates the contiguous slice i of the
examples (`tfnode.evaluation.cells.shard_range`) and writes its report to
``<output_dir>/shards/<i>-of-<N>/`` together with `tfnode.evaluation.arrays.FILE` (every cell's per-example
distances, queries and masks). `merge` joins N such shards: it concatenates the
per-example arrays in shard order and recomputes every cell, summary, worst case, check
and verdict with the functions the evaluation itself uses, so the merged report holds
the numbers of one unsharded run (every random draw is keyed by the example's index:
given a model that treats samples independently, an example's result does not depend on
the shard it was in; Square's and Boundary's random search, and transfer's attack on
its source, draw per batch: their cells agree up to those draws). Times add up across
shards; ``wall_seconds`` is the longest shard's. The model probes are shard 0's (its
first batch is the unsharded run's when it holds at least one batch).
"""

import glob
import json
import os
import time

import numpy as np

from tfnode import files
from tfnode.evaluation import arrays as arrays_lib, cells as cells_lib, certify, checks, grey, \
    outcomes, render
from tfnode.errors import ConfigError, TfnodeError

def shard_dir(output_dir, index, count):
    """Where shard ``index`` of ``count`` writes its report."""
    return os.path.join(output_dir, "shards", f"{index}-of-{count}")


def _load(folder):
    try:
        with open(os.path.join(folder, "report.json")) as f:
            report = json.load(f)
        arrays = arrays_lib.load(os.path.join(folder, arrays_lib.FILE))
    except (OSError, ValueError, KeyError) as err:
        raise TfnodeError(f"shard {folder!r}: cannot read its report.json and {arrays_lib.FILE} "
                          f"({type(err).__name__}: {err})") from None
    if "shard" not in report:
        raise TfnodeError(f"{folder!r} is not a shard's report (it has no 'shard' entry)")
    return report, arrays


def find(output_dir):
    """The shard folders under ``output_dir`` (see `shard_dir`), in shard order."""
    found = sorted(glob.glob(os.path.join(output_dir, "shards", "*-of-*")),
                   key=lambda p: int(os.path.basename(p).split("-")[0]))
    if not found:
        raise ConfigError("output_dir", f"{output_dir!r} has no shards "
                          f"(expected {shard_dir(output_dir, 0, 'N')} and the others)")
    counts = sorted({os.path.basename(p).split("-of-")[1] for p in found})
    if len(counts) > 1:
        raise ConfigError("output_dir", f"{output_dir!r} holds shards of runs with "
                          f"num_shards {' and '.join(counts)}; keep one run's shards there")
    return found


def merge(folders, output_dir):
    """Merges the shard reports in ``folders`` into one report in ``output_dir``.

    Raises:
      TfnodeError: a folder that is not a shard, shards of different runs or of models
        with different weights, or a shard missing or given twice.

    Returns:
      The merged report dict (also written as ``report.json``, ``report.md``, plots).
    """
    shards = [_load(folder) for folder in folders]
    reports = [r for r, _ in shards]
    count = reports[0]["shard"]["count"]
    indices = sorted(r["shard"]["index"] for r in reports)
    if indices != list(range(count)):
        raise TfnodeError(f"shards {indices} given; a run with num_shards {count} needs "
                          f"each of 0..{count - 1} exactly once")
    shards.sort(key=lambda s: s[0]["shard"]["index"])
    reports = [r for r, _ in shards]
    for r in reports[1:]:
        if files.differing_settings(reports[0]["config"], r["config"],
                                    ignore=("shard_index", "output_dir", "merge_shards")):
            raise TfnodeError("the shards come from different runs: their configs differ "
                              "in more than shard_index, output_dir and merge_shards")
    _check_same_models(reports)
    first = reports[0]
    merged = {k: v for k, v in first.items() if k not in ("shard", "paths", "models",
                                                          "warnings", "wall_seconds")}
    merged["num_examples"] = sum(r["num_examples"] for r in reports)
    merged["shards"] = [{**r["shard"], "wall_seconds": r["wall_seconds"]} for r in reports]
    merged["wall_seconds"] = max(r["wall_seconds"] for r in reports)
    joined = {label: _joined_all([a[label] for _, a in shards]) for label in first["models"]}
    merged["models"] = {label: _merge_model([r["models"][label] for r in reports],
                                            joined[label], first)
                        for label in first["models"]}
    merged["comparisons"] = cells_lib.comparisons(
        merged["models"], [outcomes.eps_key(e) for e in first["eps"]])
    merged["warnings"] = [w for label, res in merged["models"].items()
                          for w in checks.warnings(label, res["checks"])]
    files.check_writable(output_dir, field="output_dir")
    arrays_lib.save(os.path.join(output_dir, arrays_lib.FILE), joined)
    merged["paths"] = render.write_report(merged, output_dir)
    return merged


# How long shard 0 waits for a missing shard whose folder does not change: its job saves
# each finished cell there (`tfnode.evaluation.progress`), and one cell of Boundary on a
# slow machine can take tens of minutes.
STALL_SECONDS = 3600
POLL_SECONDS = 10


def wait_and_merge(output_dir, count, *, log=print, poll_seconds=POLL_SECONDS,
                   stall_seconds=STALL_SECONDS, sleep=time.sleep):
    """Shard 0's end of a run whose jobs share ``output_dir`` (the workers of a
    ``TF_CONFIG`` cluster): waits until each of the ``count`` shards has its report, then
    merges them (`merge`).

    A shard's folder is made when its job starts and changes as its cells finish. Without
    a folder (``output_dir`` is not one folder every job sees, or that job has not
    started) or after ``stall_seconds`` without a change (the job died), it does not wait:
    it logs that ``tools.merge_shards`` merges them once every shard is done.

    Returns:
      The merged report dict, or None when it did not merge.
    """
    folders = [shard_dir(output_dir, i, count) for i in range(count)]
    waiting_for = None
    while True:
        missing = [i for i, f in enumerate(folders)
                   if not os.path.isfile(os.path.join(f, "report.json"))]
        if not missing:
            report = merge(folders, output_dir)
            log(f"tfnode: merged {count} shards ({report['num_examples']} examples) into "
                f"{report['paths']['md']}")
            return report
        absent = [i for i in missing if not os.path.isdir(folders[i])]
        idle = [i for i in missing if i not in absent
                and time.time() - _last_change(folders[i]) > stall_seconds]
        reason = (f"shard(s) {absent} have no folder in {output_dir!r} (not one folder "
                  "every job shares, or those jobs have not started)" if absent else
                  f"shard(s) {idle} have not changed for {stall_seconds} s" if idle else None)
        if reason:
            log(f"tfnode: not merging: {reason}; once every shard is done: "
                f"python -m tools.merge_shards --output_dir={output_dir}")
            return None
        if missing != waiting_for:
            log(f"tfnode: waiting for shard(s) {missing} of {count} in {output_dir}")
            waiting_for = missing
        sleep(poll_seconds)


def _last_change(folder):
    """The latest modification time of ``folder`` and everything in it."""
    times = [0.0]
    for root, dirs, names in os.walk(folder):
        for path in [root] + [os.path.join(root, n) for n in dirs + names]:
            try:
                times.append(os.path.getmtime(path))
            except OSError:  # removed meanwhile (a finished cell's progress files)
                pass
    return max(times)


def _check_same_models(reports):
    """Every shard evaluated the same weights: a model file replaced between two shards
    (same path, other weights) would otherwise merge into one report."""
    for label in reports[0]["models"]:
        prints = {r["shard"]["index"]: (r["models"].get(label, {}).get("info") or {}).get(
            "fingerprint") for r in reports}
        if len(set(prints.values())) > 1:
            raise TfnodeError(f"model {label!r} has other weights in some shards "
                              f"(fingerprints by shard: {prints}); evaluate every shard on "
                              "one model")


def _joined(arrays, name, field):
    """A field's per-example array over all shards; a shard that attacked no example
    there has none (no queries or gradients were counted): zeros."""
    values = [a[name].get(field) for a in arrays]
    like = next(v for v in values if v is not None)
    return np.concatenate([np.zeros(len(a[name]["l2"]), like.dtype) if v is None else v
                           for a, v in zip(arrays, values)])


def _joined_all(arrays):
    """One model's per-example arrays of every cell, joined over the shards in order."""
    return {cell: {f: _joined(arrays, cell, f) for f in {f for a in arrays for f in a[cell]}}
            for cell in arrays[0]}


def _merge_model(results, arrays, report):
    """One model's merged result from its shard results and its joined per-example
    arrays (`_joined_all`)."""
    out = {k: v for k, v in results[0].items()
           if k not in ("attacks", "worst_case", "checks", "verdict", "certified",
                        "grey_image")}
    correct = np.concatenate([outcomes.decode(r["clean_correct"]) for r in results])
    out.update(clean_correct=outcomes.encode(correct), clean_accuracy=float(correct.mean()),
               clean_seconds=sum(r["clean_seconds"] for r in results), attacks={})
    for name in results[0].get("attack_order") or results[0]["attacks"]:
        attack = results[0]["attacks"][name]
        cells = {}
        for key, first_cell in attack["cells"].items():
            per = arrays[(name, key)]
            robust = np.concatenate([outcomes.decode(r["attacks"][name]["cells"][key]["robust"])
                                     for r in results])
            new = cells_lib.cell(first_cell["eps"], correct, robust, per)
            for additive in ("carried", "exit_not_confirmed", "seconds"):
                if additive in first_cell:
                    new[additive] = sum(r["attacks"][name]["cells"][key][additive]
                                        for r in results)
            cells[key] = new
        merged = {"meta": attack["meta"], "cells": cells}
        if "summary" in attack:
            per = arrays[(name, "summary")]
            merged["summary"] = {**cells_lib.summary(per, correct),
                                 "over": attack["summary"]["over"],
                                 "seconds": sum(r["attacks"][name]["summary"]["seconds"]
                                                for r in results)}
        if "throughput" in attack:
            merged["throughput"] = cells_lib.throughput(
                *(sum(r["attacks"][name]["throughput"][k] for r in results)
                  for k in ("seconds", "examples_x_eps", "attacked")))
        out["attacks"][name] = merged
    certified = certify.merged(results)
    if certified is not None:
        out["certified"] = certified
    grey_image = grey.merged(results)
    if grey_image is not None:
        out["grey_image"] = grey_image
    cells_lib.finish(out, [outcomes.eps_key(e) for e in report["eps"]], audit=report["audit"],
                    batch_size=report["batch_size"])
    return out
