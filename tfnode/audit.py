"""Gradient-masking audit: adaptive attacks on ODE models, sanity checks and a verdict.

Huang et al. 2020 ("Adversarial robustness of stabilized Neural ODEs might be from
obfuscated gradients") found that PGD is fooled by the adaptive solver while
gradient-free attacks are not; Carlini et al. 2019 ("On Evaluating Adversarial
Robustness") list the checks a real evaluation needs. `tfnode.evaluate` runs, with
``audit=True``, the attacks of `AUDIT_ATTACKS` next to the standard ones, and this
module turns all the cells into pass/fail checks and a verdict: the robust accuracy is
the minimum over every attack run, per eps.
"""

from tfnode import models

# Audit attacks: (base attack, its option overrides, solver options of the surrogate the
# attack differentiates, or None for the model itself). A surrogate's adversarials are
# evaluated on the deployed model (BPDA-style, Athalye et al. 2018).
AUDIT_ATTACKS = {
    # What a torchdiffeq/TFP user attacks through: the adjoint gradient.
    "pgd_adjoint": ("pgd", {}, {"gradient": "adjoint", "per_sample_steps": False}),
    # The same dynamics solved much more accurately.
    "pgd_tight": ("pgd", {}, {"rtol": 1e-5, "atol": 1e-5}),
    # A fixed-step solver: no step-size control at all in the gradient path.
    "pgd_rk4": ("pgd", {}, {"solver": "rk4", "step_size": 0.1, "per_sample_steps": False}),
    # More steps and random restarts, at the standard PGD's step size: a larger search
    # than the standard PGD, so its robust accuracy should not be higher (up to the
    # randomness of the starts and PGD returning its last iterate: the check allows 2
    # points).
    # (Madry et al.'s 2.5 eps / steps made the step smaller than PGD-40's at 100 steps,
    # a weaker attack that the check below then flagged on a plain ResNet.)
    "pgd_strong": ("pgd", {"num_steps": 100, "restarts": 5}, None),
    # Accuracy must go to ~0 when the budget covers the whole input range.
    "pgd_unbounded": ("pgd", {"num_steps": 20, "step_size": 0.1}, None),
}
UNBOUNDED_EPS = 1.0
# Robust accuracy differences below this are noise (2 points).
TOLERANCE = 0.02


def surrogate(model, info, name):
    """The model an audit attack differentiates, or None if it does not apply."""
    spec = AUDIT_ATTACKS[name][2]
    if spec is None:
        return model
    if info.get("format") != "keras" or not info.get("ode_blocks"):
        return None  # solver surrogates need a Keras model with ODE blocks
    return models.with_solver_options(model, **spec)


def audit_attacks(info, *, has_source):
    """The attacks the audit adds for a model (names)."""
    names = [n for n in AUDIT_ATTACKS
             if AUDIT_ATTACKS[n][2] is None or (info.get("format") == "keras"
                                                and info.get("ode_blocks"))]
    # The two black-box attacks of Huang et al. 2020's check: score-based and
    # decision-based; neither uses a gradient, so neither can be masked.
    return names + ["square", "boundary"] + (["transfer"] if has_source else [])


def _robust(cells, attack, eps_key):
    cell = cells.get(attack, {}).get(eps_key)
    return None if cell is None else cell["robust_accuracy"]


def verdict(result, eps):
    """Per-eps minimum over attacks, and the pass/fail checks, for one model's results."""
    cells = result["attacks"]
    keys = [f"{e:g}" for e in eps]
    minimum = {}
    for k in keys:
        values = [(c[k]["robust_accuracy"], name) for name, c in cells.items()
                  if k in c and name != "pgd_unbounded"]
        if values:
            acc, name = min(values)
            minimum[k] = {"robust_accuracy": acc, "attack": name}
    checks = []

    def check(name, passed, detail, masking=True):
        checks.append({"check": name, "passed": bool(passed), "detail": detail,
                       "flags_masking": masking and not passed})

    c = result["checks"]
    check("gradients are finite and nonzero",
          c["zero_gradient_fraction"] == 0 and c["nonfinite_gradient_fraction"] == 0,
          f"zero {c['zero_gradient_fraction']:.0%}, non-finite "
          f"{c['nonfinite_gradient_fraction']:.0%} of the input gradients")
    check("logits are deterministic across calls", c["logits_max_diff_repeat"] <= 1e-5,
          f"max change {c['logits_max_diff_repeat']:.2g}")
    if "pgd_unbounded" in cells:
        acc = _robust(cells, "pgd_unbounded", f"{UNBOUNDED_EPS:g}")
        check("accuracy goes to ~0 as eps grows", acc is not None and acc <= 0.01,
              f"PGD at eps {UNBOUNDED_EPS:g}: {acc:.3f}")
    for k in keys:
        pairs = [("iterative >= single-step", "pgd", "fgsm"),
                 ("more steps/restarts do not help the defense", "pgd_strong", "pgd")]
        for label, strong, weak in pairs:
            a, b = _robust(cells, strong, k), _robust(cells, weak, k)
            if a is not None and b is not None:
                check(f"{label} (eps {k})", a <= b + TOLERANCE,
                      f"{strong} {a:.3f} vs {weak} {b:.3f}")
        white = [(_robust(cells, w, k), w) for w in ("fgsm", "pgd", "pgd_strong", "di2_fgsm")
                 if _robust(cells, w, k) is not None]
        black = [(_robust(cells, b, k), b) for b in ("square", "boundary", "transfer")
                 if _robust(cells, b, k) is not None]
        if white and black:
            (w_acc, w_name), (b_acc, b_name) = min(white), min(black)
            check(f"white-box >= black-box and transfer (eps {k})",
                  w_acc <= b_acc + TOLERANCE, f"best white-box {w_name} {w_acc:.3f} vs "
                  f"best black-box {b_name} {b_acc:.3f}")
        own = _robust(cells, "pgd", k)
        surrogates = [(_robust(cells, s, k), s) for s in ("pgd_adjoint", "pgd_tight", "pgd_rk4")
                      if _robust(cells, s, k) is not None]
        if own is not None and surrogates:
            s_acc, s_name = min(surrogates)
            check(f"the model's own gradient is not beaten by a surrogate's (eps {k})",
                  own <= s_acc + TOLERANCE, f"pgd {own:.3f} vs {s_name} {s_acc:.3f}")
    return {"minimum": minimum, "checks": checks,
            "masking_suspected": any(ch["flags_masking"] for ch in checks)}
