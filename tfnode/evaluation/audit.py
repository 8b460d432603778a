"""Gradient-masking audit: which extra attacks a model gets, and the verdict.

Huang et al. 2020 ("Adversarial robustness of stabilized Neural ODEs might be from
obfuscated gradients") found that PGD is fooled by the adaptive solver while
gradient-free attacks are not; Carlini et al. 2019 ("On Evaluating Adversarial
Robustness") list the checks a real evaluation needs. With ``audit=True`` the evaluation
runs, next to the requested attacks, the audit's own PGD variants (`VARIANTS`: through
solver surrogates, stronger, unbounded) that apply to the model, and every registered
attack marked ``in_audit`` (APGD, FAB-T, Square, Boundary, and transfer when a source model is
given). The verdict is the per-example worst case over all of them (`tfnode.evaluation.outcomes`)
and the checks of `tfnode.evaluation.checks`.
"""

import dataclasses
from typing import Callable, Mapping

from tfnode import attacks, models, ode
from tfnode.errors import TfnodeError
from tfnode.evaluation import checks, outcomes

UNBOUNDED_EPS = 1.0
# The tolerance of the tight surrogate (100x the default 1e-3).
TIGHT = 1e-5


@dataclasses.dataclass(frozen=True)
class Variant:
    """A PGD variant of the audit.

    Attributes:
      name: its name in the report (and in ``--attack_option=<name>.<option>=...``).
      attack: the registered attack it runs.
      role: ``"surrogate"`` (crafted through the model re-solved with
        ``solver_options``, evaluated on the deployed model: BPDA-style, Athalye et al.
        2018), ``"stronger"`` (a larger search than ``compares_with``), or ``"sanity"``
        (at eps `UNBOUNDED_EPS`, never counted toward robust accuracy).
      why: one line for the report.
      overrides: option overrides over the user's options of ``attack``.
      solver_options: a surrogate's `tfnode.models.with_solver_options`.
      applies: ``applies(blocks) -> None, or why the variant does not apply`` over the
        model's ODE block descriptions (`tfnode.exports.read.ode_blocks`).
      compares_with: the attack the checks compare it with.
    """
    name: str
    attack: str
    role: str
    why: str
    overrides: Mapping = dataclasses.field(default_factory=dict)
    solver_options: Mapping | None = None
    applies: Callable[[list], str | None] = lambda blocks: None
    compares_with: str = "pgd"


def _adaptive(block):
    return ode.adaptive(block["solver"])


def _adjoint_applies(blocks):
    if not all(b["solver"] in ode.ADJOINT_SOLVERS for b in blocks):
        return f"needs {' or '.join(ode.ADJOINT_SOLVERS)} blocks only (TFP's adjoint)"
    if all(ode.uses_tfp(b["solver"], b["gradient"]) for b in blocks):
        return "the model is differentiated by the adjoint already"
    return None


def _tight_applies(blocks):
    adaptive = [b for b in blocks if _adaptive(b)]
    if not adaptive:
        return "fixed-step blocks have no tolerance to tighten"
    if all(max(b["rtol"], b["atol"]) <= TIGHT for b in adaptive):
        return f"the model is solved at rtol, atol <= {TIGHT:g} already"
    return None


def _rk4_applies(blocks):
    if all(b["solver"] == "rk4" and b["step_size"] == 0.1 for b in blocks):
        return "the model is solved by rk4 with step 0.1 already"
    return None


VARIANTS = (
    # What a torchdiffeq/TFP user attacks through: the adjoint gradient.
    Variant("pgd_adjoint", "pgd", "surrogate",
            "PGD through TFP's DormandPrince and its adjoint gradient "
            "(TFP's error control: the forward solve changes too)",
            solver_options={"gradient": "adjoint", "per_sample_steps": False},
            applies=_adjoint_applies),
    # The same dynamics solved much more accurately.
    Variant("pgd_tight", "pgd", "surrogate", f"PGD through rtol = atol = {TIGHT:g}",
            solver_options={"rtol": TIGHT, "atol": TIGHT}, applies=_tight_applies),
    # A fixed-step solver: no step-size control at all in the gradient path.
    Variant("pgd_rk4", "pgd", "surrogate", "PGD through rk4 with step 0.1",
            solver_options={"solver": "rk4", "step_size": 0.1, "gradient": None,
                            "per_sample_steps": False}, applies=_rk4_applies),
    # More steps and restarts at the standard PGD's step size: a larger search, so its
    # robust accuracy should not be higher, and much lower means PGD had not converged.
    # (Madry et al.'s 2.5 eps / steps made the step smaller than PGD-40's at 100 steps,
    # a weaker attack that the check then flagged on a plain ResNet.)
    Variant("pgd_strong", "pgd", "stronger", "PGD with 100 steps and 5 restarts",
            overrides={"num_steps": 100, "restarts": 5}),
    # Accuracy must go to ~0 when the budget covers the whole input range.
    Variant("pgd_unbounded", "pgd", "sanity", f"PGD at eps {UNBOUNDED_EPS:g}",
            overrides={"num_steps": 20, "step_size": 0.1}),
)
NAMES = tuple(v.name for v in VARIANTS)


def variant(name):
    """The `Variant` called ``name``."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise TfnodeError(f"unknown audit attack {name!r}; expected one of {list(NAMES)}")


def _why_not(v, info):
    """None if variant ``v`` applies to the loaded model described by ``info``."""
    if v.solver_options is None:
        return None
    blocks = info.get("ode_blocks")
    if info.get("format") != "keras" or not blocks:
        return "needs a Keras model with ODE blocks"
    reason = v.applies(blocks)
    if reason:
        return reason
    for block in blocks:  # every re-solved block must be a valid block
        merged = {**block, **v.solver_options}
        try:
            ode.validate(**{k: merged[k] for k in ode.OPTIONS})
        except TfnodeError as err:
            return f"block {block['name']}: {err}"
    return None


def plan(info, *, has_source):
    """The attacks the audit adds for a model.

    Returns:
      ``(variants, registered, skipped)``: the applicable `Variant` s, the names of the
      registered attacks to run (those the variants are compared with, and the
      ``in_audit`` ones), and ``{name: why it does not apply}``.
    """
    skipped = {v.name: _why_not(v, info) for v in VARIANTS}
    chosen = [v for v in VARIANTS if skipped[v.name] is None]
    # The attacks the variants are compared with run too, or their checks could not.
    registered = list(dict.fromkeys(v.compares_with for v in chosen))
    for name in attacks.available(in_audit=True):
        if attacks.get(name).needs_source and not has_source:
            skipped[name] = "needs a source model (source_model_path)"
        else:
            registered.append(name)
    return chosen, registered, {k: r for k, r in skipped.items() if r}


def verdict(result, findings, eps_keys):
    """The audit's verdict for one model's result.

    Args:
      result: the model's result, its cells complete.
      findings: `tfnode.evaluation.checks.run_all` of it.
      eps_keys: the report's eps keys.

    Returns:
      ``{"worst_case", "masking_suspected", "not_converged", "tolerance"}``: the
      per-example worst case per eps (`tfnode.evaluation.outcomes.worst_case`), whether a check
      that flags masking failed, and the eps keys at which a standard attack had not
      converged (a stronger variant of it found more adversarials than the tolerance
      allows).
    """
    return {"worst_case": outcomes.worst_case(result, eps_keys),
            "masking_suspected": any(not f["passed"] and f["flag"] == "masking"
                                     for f in findings),
            "not_converged": sorted({f["eps"] for f in findings if not f["passed"]
                                     and f["flag"] == "not_converged" and f["eps"]}, key=float),
            "tolerance": checks.TOLERANCE}


def tolerance_grid(model, info, x, y, eps, tolerances, *, craft, predict, pgd_options):
    """PGD robust accuracy, attack-time tolerance (row) x inference-time tolerance (column).

    Carrara et al. 2019 ("On the robustness of Neural ODEs"): an ODE-Net deployed at one
    tolerance and attacked through another can look robust only because of the gap.
    Robust = correct on the clean image and the adversarial, both at the column's
    tolerance. Only adaptive blocks have a tolerance: with fixed-step blocks alone every
    cell would be the same model, and the grid is recorded as not applicable.

    Args:
      model: the Keras model.
      info: its `tfnode.exports.read.load_model` info.
      x: images.
      y: labels.
      eps: budgets.
      tolerances: rtol = atol values.
      craft: ``craft(model, eps, title) -> x_adv``, the evaluation's PGD.
      predict: ``predict(model, x) -> labels`` in the evaluation's batches.
      pgd_options: recorded with the grid.
    """
    blocks = info.get("ode_blocks")
    if info.get("format") != "keras" or not blocks:
        return {"skipped": "not applicable: needs a Keras model with ODE blocks"}
    if not any(_adaptive(b) for b in blocks):
        return {"skipped": "not applicable: fixed-step ODE blocks have no tolerance"}
    variants = {t: models.with_solver_options(model, rtol=t, atol=t) for t in tolerances}
    clean = {t: predict(m, x) == y for t, m in variants.items()}
    out = {"tolerances": list(tolerances), "pgd": dict(pgd_options), "eps": {},
           "clean_accuracy": [float(clean[t].mean()) for t in tolerances]}
    for e in eps:
        rows = []
        for attack_tol in tolerances:
            x_adv = craft(variants[attack_tol], e, f"pgd through rtol=atol={attack_tol:g}")
            rows.append([float((clean[t] & (predict(variants[t], x_adv) == y)).mean())
                         for t in tolerances])
        out["eps"][outcomes.eps_key(e)] = rows
    return out
