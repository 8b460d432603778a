"""Per-example outcomes in a report, and the per-example worst case over attacks.

Robust accuracy under several attacks is a per-example worst case: AutoAttack and
RobustBench count an example as robust only if it survives every attack at that eps.
The minimum over the attacks' own robust accuracies overstates it (if PGD fools one half
and Square the other, the minimum says 50% where the truth is 0%). So every cell of
``report.json`` keeps which examples stayed robust, packed as bits (``encode``), and the
worst case is re-aggregated from those (`worst_case`) without rerunning anything.

A model result (``report["models"][label]``) holds ``clean_correct`` (encoded) and, per
attack, ``{"meta": {...}, "cells": {eps_key: {"robust": encoded, ...}}}``; an attack
whose ``meta["role"]`` is ``"sanity"`` (PGD at eps = 1) is not an attack on the budget
and never enters the worst case.
"""

import base64

import numpy as np

from tfnode import stats


def encode(mask):
    """A bool array as ``{"n": N, "bits": base64 of its packed bits}`` (JSON-friendly)."""
    mask = np.asarray(mask, bool)
    return {"n": int(mask.size),
            "bits": base64.b64encode(np.packbits(mask).tobytes()).decode("ascii")}


def decode(encoded):
    """The bool array that `encode` packed."""
    raw = np.frombuffer(base64.b64decode(encoded["bits"]), np.uint8)
    return np.unpackbits(raw, count=encoded["n"]).astype(bool)


def eps_key(eps):
    """The key of an eps in report dicts (``0.1`` -> ``"0.1"``)."""
    return f"{float(eps):g}"


def exact_eps(result, key):
    """The budget behind an eps key of a model result, from a cell that stores it (a key
    rounds to six digits: 0.4999996 is keyed "0.5"); the key's value for a budget
    without one (reports written before certified cells stored theirs)."""
    cells = [a["cells"].get(key) for a in result.get("attacks", {}).values()]
    cells.append((result.get("certified") or {}).get(key))
    return next((float(c["eps"]) for c in cells if c and "eps" in c), float(key))


def budget_attacks(result):
    """Names of the attacks of a model result that count toward the worst case."""
    return [name for name, attack in result["attacks"].items()
            if attack["meta"].get("role") != "sanity"]


def worst_case(result, eps_keys):
    """Per eps: the examples that survive every attack run at that eps.

    Args:
      result: one model's result (``report["models"][label]``).
      eps_keys: the eps keys to aggregate.

    Returns:
      ``{eps_key: {"robust_accuracy", "num_robust", "num_examples", "attacks",
      "decisive", "strongest_single"}}``, where ``attacks`` lists the attacks that ran
      at that eps, ``decisive`` maps each attack to the clean-correct examples only it
      broke (the attacks an evaluation cannot drop), and ``strongest_single`` is the
      attack with the lowest robust accuracy of its own (the old, optimistic minimum;
      attacks run only on the others' survivors have none and are left out). Eps with
      no attack are left out.
    """
    out = {}
    for k in eps_keys:
        robust = {name: decode(result["attacks"][name]["cells"][k]["robust"])
                  for name in budget_attacks(result) if k in result["attacks"][name]["cells"]}
        if not robust:
            continue
        clean = decode(result["clean_correct"])
        survive = np.stack(list(robust.values())).all(axis=0)
        broken = {name: _broken(result, name, mask, robust, clean)
                  for name, mask in robust.items()}
        broken_by = np.sum(list(broken.values()), axis=0)
        decisive = {name: int(np.sum(mask & (broken_by == 1)))
                    for name, mask in broken.items()}
        # An attack run on the others' survivors (fast schedule) has no number of its own.
        single = [n for n in robust
                  if not result["attacks"][n]["meta"].get("survivors_of")] or list(robust)
        strongest = min(single, key=lambda name: robust[name].mean())
        out[k] = {"robust_accuracy": float(survive.mean()), "num_robust": int(survive.sum()),
                  "num_examples": int(survive.size),
                  "ci95": list(stats.wilson(int(survive.sum()), survive.size)),
                  "attacks": list(robust),
                  "decisive": decisive,
                  "strongest_single": {"attack": strongest,
                                       "robust_accuracy": float(robust[strongest].mean())}}
    return out


def worst_case_mask(result, names, eps_key):
    """The examples robust under every attack of ``names`` at ``eps_key`` (the mask
    behind a `worst_case` entry, whose ``attacks`` are ``names``)."""
    return np.logical_and.reduce([decode(result["attacks"][n]["cells"][eps_key]["robust"])
                                  for n in names])


def _broken(result, name, mask, robust, clean):
    """The examples attack ``name`` broke itself. An attack run on the survivors of others
    (fast schedule) has a mask that already holds theirs: it broke only what they all
    left robust."""
    before = [robust[n] for n in result["attacks"][name]["meta"].get("survivors_of", ())
              if n in robust]
    if before:
        return np.logical_and.reduce(before) & ~mask
    return clean & ~mask


def norm_stats(l2, linf):
    """Mean and median L2 and Linf distances (None where there are none)."""
    if len(l2) == 0:
        return {"l2_mean": None, "l2_median": None, "linf_mean": None, "linf_median": None}
    return {"l2_mean": float(np.mean(l2)), "l2_median": float(np.median(l2)),
            "linf_mean": float(np.mean(linf)), "linf_median": float(np.median(linf))}
