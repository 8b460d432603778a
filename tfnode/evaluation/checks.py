"""Sanity and gradient-masking checks: each one small function over a model's result.

In the spirit of AutoAttack's ``checks.py`` and Carlini et al. 2019 ("On Evaluating
Adversarial Robustness", Sec. 5): every check reads only the report dict (the model
probes and the attack cells with their ``meta``), so it can be unit-tested on
hand-written results and re-run on an old ``report.json``. Each returns a list of
findings::

    {"check": name, "eps": eps key or None, "passed": bool, "detail": the numbers,
     "flag": what a failure means: "masking", "not_converged", "batch_dependent" or
             "unsound" (a certificate an attack broke),
     "means": one sentence for the reader}

A difference of robust accuracies counts only beyond `TOLERANCE`; exactly at it passes.
"""

import numpy as np

from tfnode.evaluation import grey, outcomes

# Robust accuracy differences up to this are noise (2 points): random starts, and
# attacks that return their last iterate rather than their best.
TOLERANCE = 0.02
# Float slack so that a difference of exactly TOLERANCE (e.g. 0.30 vs 0.28) passes.
_SLACK = 1e-9
# Logit differences below these are float noise, not randomness or batch dependence.
REPEAT_LIMIT = 1e-5
BATCH_LIMIT = 1e-4
# Accuracy an unbounded attack must reach.
UNBOUNDED_LIMIT = 0.01


def _finding(check, passed, detail, flag, means, eps=None):
    return {"check": check, "eps": eps, "passed": bool(passed), "detail": detail,
            "flag": flag, "means": means}


def _at_most(a, b):
    """``a <= b + TOLERANCE``, exactly at the threshold included."""
    return a <= b + TOLERANCE + _SLACK


def _cells(result, eps_key, **meta):
    """``{name: robust accuracy}`` of the attacks at ``eps_key`` whose meta match."""
    return {name: a["cells"][eps_key]["robust_accuracy"] for name, a in result["attacks"].items()
            if eps_key in a["cells"] and all(a["meta"].get(k) == v for k, v in meta.items())}


def _own_white_box(result, eps_key):
    """White-box attacks on the model itself (not surrogates, not the sanity attack)."""
    return {name: acc for name, acc in _cells(result, eps_key, kind="white-box",
                                              crafted_on="model").items()
            if result["attacks"][name]["meta"].get("role") != "sanity"}


def gradients_usable(result, **_):
    p = result["probes"]
    return [_finding("gradients are finite and nonzero",
                     p["zero_gradient_fraction"] == 0 and p["nonfinite_gradient_fraction"] == 0,
                     f"zero {p['zero_gradient_fraction']:.0%}, non-finite "
                     f"{p['nonfinite_gradient_fraction']:.0%} of the input gradients",
                     "masking", "gradient attacks get no signal (gradient masking)")]


def deterministic(result, **_):
    diff = result["probes"]["logits_max_diff_repeat"]
    return [_finding("logits are deterministic across calls", diff <= REPEAT_LIMIT,
                     f"max change {diff:.2g}", "masking",
                     "a randomized model: attack the expectation (EOT, Athalye et al. 2018)")]


def batch_independent(result, *, batch_size=None, **_):
    diff = result["probes"].get("logits_max_diff_alone_vs_batch")
    if diff is None:
        return []
    return [_finding("a sample's logits do not depend on its batch", diff <= BATCH_LIMIT,
                     f"max change {diff:.2g} alone vs in a batch of {batch_size}",
                     "batch_dependent", "the adaptive solver's step size is shared by the "
                     "batch: the results hold for this batch size only")]


def unbounded_attack_succeeds(result, **_):
    out = []
    for name, attack in result["attacks"].items():
        if attack["meta"].get("role") != "sanity":
            continue
        for k, cell in attack["cells"].items():
            acc = cell["robust_accuracy"]
            out.append(_finding("accuracy goes to ~0 as eps grows", acc <= UNBOUNDED_LIMIT,
                                f"{name} at eps {k}: {acc:.3f}", "masking",
                                "an attack that covers the whole input range must win; "
                                "its gradients do not lead anywhere", eps=k))
    return out


def monotone_in_eps(result, *, eps_keys, **_):
    out = []
    order = sorted(eps_keys, key=float)
    for name, attack in result["attacks"].items():
        if attack["meta"].get("eps_on_survivors"):
            continue  # the fast schedule makes it monotone: nothing for the check to see
        keys = [k for k in order if k in attack["cells"]]
        accs = [attack["cells"][k]["robust_accuracy"] for k in keys]
        if len(accs) < 2:
            continue
        rises = [(a, b) for a, b in zip(keys, keys[1:]) if not _at_most(
            attack["cells"][b]["robust_accuracy"], attack["cells"][a]["robust_accuracy"])]
        out.append(_finding(f"{name}: robust accuracy does not rise with eps", not rises,
                            ", ".join(f"{k}: {a:.3f}" for k, a in zip(keys, accs)),
                            "not_converged", "the attack is not converging"))
    return out


def iterative_beats_single_step(result, *, eps_keys, **_):
    out = []
    for k in eps_keys:
        white = _own_white_box(result, k)
        its = {n: result["attacks"][n]["meta"].get("iterations") for n in white}
        single = {n: a for n, a in white.items() if its[n] == 1}
        if not single:
            continue
        s_name = min(single, key=single.get)
        for name, acc in white.items():
            if its[name] and its[name] > 1:
                out.append(_finding(f"iterative {name} >= single-step {s_name}",
                                    _at_most(acc, single[s_name]),
                                    f"{name} {acc:.3f} vs {s_name} {single[s_name]:.3f}",
                                    "masking", "an iterative attack weaker than one step is "
                                    "a sign of gradient masking", eps=k))
    return out


def _paired(result, role, eps_keys):
    """``(eps key, name, robust accuracy, compared attack, its robust accuracy)`` of each
    attack with ``role`` and the attack its meta ``compares_with``, where both ran."""
    for k in eps_keys:
        for name, attack in result["attacks"].items():
            meta = attack["meta"]
            other = result["attacks"].get(meta.get("compares_with"), {}).get("cells", {})
            if meta.get("role") == role and k in attack["cells"] and k in other:
                yield (k, name, attack["cells"][k]["robust_accuracy"], meta["compares_with"],
                       other[k]["robust_accuracy"])


def stronger_attack_converged(result, *, eps_keys, **_):
    """Both directions of Carlini et al.'s "more iterations" check."""
    out = []
    for k, name, strong, base, weak in _paired(result, "stronger", eps_keys):
        detail = f"{name} {strong:.3f} vs {base} {weak:.3f}"
        out.append(_finding("more steps/restarts do not help the defense",
                            _at_most(strong, weak), detail, "masking",
                            "a larger search found fewer adversarials", eps=k))
        out.append(_finding(f"standard attack converged ({base})", _at_most(weak, strong),
                            detail, "not_converged", f"{name} finds more adversarials (beyond the "
                            f"{TOLERANCE:.0%} tolerance): {base} had not converged and its "
                            "numbers overstate robustness",
                            eps=k))
    return out


def white_box_beats_black_box(result, *, eps_keys, **_):
    out = []
    for k in eps_keys:
        white = _own_white_box(result, k)
        black = {n: a for n, a in _cells(result, k).items()
                 if result["attacks"][n]["meta"]["kind"] != "white-box"}
        # An attack run on the survivors of the others (the fast schedule's cascade) has
        # no number of its own: it is judged by what it broke that they all missed.
        cascade = {n: a for n, a in black.items()
                   if result["attacks"][n]["meta"].get("survivors_of")}
        own = {n: a for n, a in black.items() if n not in cascade}
        if white and own:
            w, b = min(white, key=white.get), min(own, key=own.get)
            out.append(_finding("white-box >= black-box and transfer",
                                _at_most(white[w], own[b]),
                                f"best white-box {w} {white[w]:.3f} vs best black-box {b} "
                                f"{own[b]:.3f}", "masking",
                                "an attack without gradients beats every gradient attack: "
                                "the gradients mislead (gradient masking)", eps=k))
        for name, acc in cascade.items():
            before = result["attacks"][name]["meta"]["survivors_of"]
            masks = [outcomes.decode(result["attacks"][n]["cells"][k]["robust"])
                     for n in before if k in result["attacks"][n]["cells"]]
            if not masks:
                continue
            left = float(np.logical_and.reduce(masks).mean())
            out.append(_finding(f"{name} finds little that the attacks before it missed",
                                _at_most(left, acc),
                                f"{left:.3f} robust after {', '.join(before)}, {acc:.3f} "
                                f"after {name} too", "masking",
                                "an attack without gradients breaks examples every attack "
                                "before it left robust: the gradients mislead (gradient "
                                "masking)", eps=k))
    return out


def own_gradient_beats_surrogates(result, *, eps_keys, **_):
    return [_finding(f"the model's own gradient is not beaten by {name}", _at_most(own, s),
                     f"{base} {own:.3f} vs {name} {s:.3f}", "masking",
                     "a surrogate's gradient finds more adversarials than the model's own: "
                     "its gradient is obfuscated", eps=k)
            for k, name, s, base, own in _paired(result, "surrogate", eps_keys)]


# Cross-entropy attacks against attacks on the DLR margin (Croce & Hein 2020, Sec. 3.2):
# with a saturated softmax the cross-entropy's gradient vanishes while the logit margin's
# does not, so APGD-CE far above APGD-DLR or APGD-T is a sign of masking by scale.
_CE, _MARGIN = "apgd_ce", ("apgd_dlr", "apgd_t")


def cross_entropy_not_beaten_by_margin(result, *, eps_keys, **_):
    out = []
    for k in eps_keys:
        cells = _cells(result, k)
        if _CE not in cells:
            continue
        for name in _MARGIN:
            if name in cells:
                out.append(_finding(
                    f"{_CE} is not far above {name}", _at_most(cells[_CE], cells[name]),
                    f"{_CE} {cells[_CE]:.3f} vs {name} {cells[name]:.3f}", "masking",
                    "the logit-margin (DLR) attack finds clearly more adversarials than the "
                    "cross-entropy one: the softmax saturates and hides the gradient "
                    "(Croce & Hein 2020)", eps=k))
    return out


def certificate_holds(result, *, eps_keys, **_):
    """No example certified by interval bounds (``--certify``) is broken by an attack:
    the bracket ``certified <= worst case`` per example. A failure is a bug in the bounds
    (or float rounding at a margin of a few ulps), never a property of the model."""
    findings = []
    for k in eps_keys:
        if k not in (result.get("certified") or {}) or k not in result.get("worst_case", {}):
            continue
        certified = outcomes.decode(result["certified"][k]["certified"])
        robust = outcomes.worst_case_mask(result, result["worst_case"][k]["attacks"], k)
        broken = int(np.sum(certified & ~robust))
        findings.append(_finding(
            "certificate holds", broken == 0,
            f"{int(certified.sum())} certified, {broken} of them broken by an attack",
            "unsound", "the interval bounds certified an example an attack broke: the "
            "certificate is wrong (report it)", eps=k))
    return findings


def grey_image_bound(result, *, eps_keys, **_):
    """At eps >= 0.5 the constant mid-grey image is inside every example's ball
    (`tfnode.evaluation.grey`): no example labelled other than the model's class of that
    image is robust there, per example; and none is certified (``--certify``), or the
    certificate is wrong. Nothing is judged where the grey image's two largest logits
    nearly tie (`grey.MIN_MARGIN`)."""
    grey_image = result.get("grey_image")
    if not grey_image or grey_image.get("margin", np.inf) < grey.MIN_MARGIN:
        return []
    possible = outcomes.decode(grey_image["possible"])
    where = (f"labelled other than {grey_image['label']}, the class of the constant image "
             f"{grey_image['pixel']:g} that lies within eps of every image")
    findings = []
    for k in eps_keys:
        if outcomes.exact_eps(result, k) < grey_image["pixel"]:
            continue
        entry = result.get("worst_case", {}).get(k)
        if entry:
            robust = outcomes.worst_case_mask(result, entry["attacks"], k)
            beyond = int(np.sum(robust & ~possible))
            findings.append(_finding(
                "no more robust than the grey image allows", beyond == 0,
                f"{int(robust.sum())} robust, {beyond} of them {where}", "masking",
                "the attacks missed an adversarial example that a constant image is, "
                "found without a gradient: they fail where they should not (gradient "
                "masking)", eps=k))
        cell = (result.get("certified") or {}).get(k)
        if cell:
            certified = outcomes.decode(cell["certified"])
            wrong = int(np.sum(certified & ~possible))
            findings.append(_finding(
                "no certificate beyond the grey image", wrong == 0,
                f"{int(certified.sum())} certified, {wrong} of them {where}", "unsound",
                "the interval bounds certified an example the grey image breaks: the "
                "certificate is wrong (report it)", eps=k))
    return findings


CHECKS = (certificate_holds, grey_image_bound, gradients_usable, deterministic,
          batch_independent, unbounded_attack_succeeds,
          monotone_in_eps, iterative_beats_single_step, stronger_attack_converged,
          white_box_beats_black_box, own_gradient_beats_surrogates,
          cross_entropy_not_beaten_by_margin)


def run_all(result, *, eps_keys, batch_size=None):
    """Every check's findings for one model's result, in `CHECKS` order."""
    return [f for check in CHECKS
            for f in check(result, eps_keys=eps_keys, batch_size=batch_size)]


def warnings(label, findings):
    """One line per failed finding, for the report's warnings."""
    return [f"{label}: {f['check']}" + (f" (eps {f['eps']})" if f["eps"] else "")
            + f": {f['detail']}: {f['means']}" for f in findings if not f["passed"]]
