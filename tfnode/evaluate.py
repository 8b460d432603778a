"""Adversarial evaluation: attack sweeps over (attack, eps) cells and a robustness report.

`evaluate` loads one model (and optionally a second one to compare with, and a source
model for transfer attacks), takes the first ``num_examples`` images of a split in a
fixed order, and fills ``report["models"][label]["attacks"][attack][eps]`` with robust
accuracy, attack success rate, perturbation norms, queries and wall time. It writes
``report.json``, ``report.md`` and ``accuracy_vs_eps.png`` atomically.

Conventions (those of RobustBench / AutoAttack): robust accuracy is the fraction of ALL
evaluated examples that the model classifies correctly both clean and under the attack;
the attack success rate is the fraction of the clean-correct examples that the attack
fools. Every batch has ``batch_size`` examples in the same order for every attack: an
adaptive ODE solver's step sizes, and so each sample's logits, depend on the batch.
"""

import contextlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfnode import attacks, audit as audit_lib, data, reports
from tfnode.errors import TfnodeError

ATTACKS = ("fgsm", "pgd", "di2_fgsm", "square", "boundary", "transfer")
# The paper's settings (Chu et al. 2020, Sec. 4): PGD 40 steps of 0.01 from a random
# start; Boundary Attack 1000 queries with steps 0.1. DI2-FGSM uses PGD's steps.
DEFAULT_ATTACK_OPTIONS = {
    "fgsm": {},
    "pgd": {"step_size": 0.01, "num_steps": 40, "rand_init": True, "restarts": 1},
    "di2_fgsm": {"step_size": 0.01, "num_steps": 40, "resize_rate": 0.9,
                 "diversity_prob": 0.5, "decay": 0.0},
    "boundary": {"max_queries": 1000, "spherical_step": 0.1, "source_step": 0.1,
                 "step_adaptation": 1.5},
    "transfer": {"attack": "fgsm"},
    # Not in the paper: the score-based black-box check of Huang et al. 2020.
    "square": {"max_queries": 1000, "p_init": 0.05},
    # Overrides of the audit's stronger PGD (see tfnode.audit.AUDIT_ATTACKS).
    "pgd_strong": {},
}
_TRANSFERABLE = ("fgsm", "pgd", "di2_fgsm")


def load_model(path, *, flag="--model_path"):
    """Loads a logits model from a ``.keras`` file or an export folder.

    An export folder of `tfnode.export` holds ``model.keras`` next to the SavedModel; that
    is preferred (it differentiates exactly as the trained model). A bare SavedModel
    folder is used through its ``serving_default`` signature's ``logits``.

    Returns:
      ``(model, info)``: a logits callable and a dict with ``path``, ``format``,
      ``input_shape`` ``(H, W, C)`` and, when known, ``name`` and ODE solver settings.
    """
    import tfnode.layers  # noqa: F401  (registers tfnode's layers for deserialization)

    keras_file = path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.keras")):
        keras_file = os.path.join(path, "model.keras")
    info = {"path": path}
    if os.path.isfile(keras_file) and keras_file.endswith(".keras"):
        try:
            model = keras.models.load_model(keras_file)
        except Exception as err:  # noqa: BLE001  any load failure is a user error here
            raise TfnodeError(f"{flag} {path!r}: cannot load {keras_file!r} "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                              ) from None
        info.update(format="keras", name=model.name, input_shape=tuple(model.input_shape[1:]),
                    ode_blocks=_ode_blocks(model))
    elif os.path.isfile(os.path.join(path, "saved_model.pb")):
        try:
            loaded = tf.saved_model.load(path)
        except Exception as err:  # noqa: BLE001
            raise TfnodeError(f"{flag} {path!r}: cannot load the SavedModel "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                              ) from None
        if "serving_default" not in loaded.signatures:
            raise TfnodeError(f"{flag} {path!r}: SavedModel has no serving_default signature")
        signature = loaded.signatures["serving_default"]
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise TfnodeError(f"{flag} {path!r}: serving_default takes {len(inputs)} inputs; "
                              "expected one image tensor")
        (arg, spec), = inputs.items()
        if "logits" not in signature.structured_outputs:
            raise TfnodeError(f"{flag} {path!r}: serving_default returns no 'logits'")

        def logits(x):
            assert loaded_keep is not None  # the closure keeps the SavedModel's variables alive
            return signature(**{arg: x})["logits"]

        loaded_keep = loaded
        model = tf.function(logits, reduce_retracing=True)
        info.update(format="saved_model", name=_export_name(path),
                    input_shape=tuple(spec.shape[1:]))
    else:
        raise TfnodeError(f"{flag} {path!r} is not a model: expected a .keras file or a "
                          "SavedModel folder (savedmodels/<name>/<version>)")
    metrics = os.path.join(path, "metrics.json") if os.path.isdir(path) else None
    if metrics and os.path.isfile(metrics):
        try:
            with open(metrics) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = {}  # metrics only label the report; a broken file is not fatal
        info["trained"] = {k: saved.get(k) for k in ("model", "dataset", "model_options",
                                                      "clean_accuracy", "mean_nfe_test")}
    return model, info


def _per_sample(model, info):
    """The model with per-sample ODE steps where possible; ``info`` says what was done."""
    blocks = info.get("ode_blocks")
    if info.get("format") != "keras":
        info["per_sample_steps"] = ("not applied: a SavedModel's solver cannot be changed; "
                                    "give the export folder with its model.keras")
        return model, info
    if not blocks:
        info["per_sample_steps"] = "not applicable: no ODE blocks"
        return model, info
    if any(b["solver"] == "dopri5" and b["gradient"] != "backprop" for b in blocks):
        info["per_sample_steps"] = ("not applied: TFP's DormandPrince (gradient='adjoint') "
                                    "has one step size per batch")
        return model, info
    from tfnode import models

    info["per_sample_steps"] = "applied"
    info["ode_blocks"] = [{**b, "per_sample_steps": True} for b in blocks]
    return models.with_solver_options(model, per_sample_steps=True), info


def _export_name(path):
    """``savedmodels/node_mnist/3`` -> ``node_mnist/3``; other folders: their name."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return "/".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def _ode_blocks(model):
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ == "ODEBlock":
            out.append({k: getattr(layer, k) for k in ("name", "solver", "rtol", "atol", "t1",
                                                       "step_size", "gradient",
                                                       "first_step_size",
                                                       "per_sample_steps")})
    return out


def validate(*, attacks_, eps, num_examples, batch_size, source_model_path, dataset,
             attack_options):
    """Raises `TfnodeError` (one line) for settings that cannot work, before any work."""
    data.info(dataset)
    if not attacks_:
        raise TfnodeError(f"--attacks is empty; expected some of {list(ATTACKS)}")
    for name in attacks_:
        if name not in ATTACKS:
            raise TfnodeError(f"unknown attack {name!r} in --attacks; expected some of "
                              f"{list(ATTACKS)}")
    if not eps:
        raise TfnodeError("--eps is empty; give at least one budget")
    for e in eps:
        if not 0.0 <= e <= 1.0:
            raise TfnodeError(f"eps {e:g} (after --eps_scale) is outside [0, 1], the pixel "
                              "range of the inputs")
    for name, value in (("num_examples", num_examples), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise TfnodeError(f"--{name} must be an integer >= 1, got {value!r}")
    if "transfer" in attacks_:
        if not source_model_path:
            raise TfnodeError("--attacks=transfer needs --source_model_path (the model the "
                              "adversarials are crafted on)")
        if attack_options["transfer"]["attack"] not in _TRANSFERABLE:
            raise TfnodeError(f"--transfer_attack must be one of {list(_TRANSFERABLE)}, got "
                              f"{attack_options['transfer']['attack']!r}")
    for name in attack_options:
        if name not in DEFAULT_ATTACK_OPTIONS:
            raise TfnodeError(f"options for unknown attack {name!r}")
    _validate_attack_options(attack_options)


# Flag of each attack option, for error messages (tools.evaluate's names).
_OPTION_FLAGS = {("pgd", "step_size"): "--pgd_step_size", ("pgd", "num_steps"): "--pgd_steps",
                 ("pgd", "restarts"): "--pgd_restarts",
                 ("di2_fgsm", "step_size"): "--di2_step_size",
                 ("di2_fgsm", "num_steps"): "--di2_steps",
                 ("di2_fgsm", "resize_rate"): "--di2_resize_rate",
                 ("di2_fgsm", "diversity_prob"): "--di2_diversity_prob",
                 ("di2_fgsm", "decay"): "--di2_decay",
                 ("boundary", "max_queries"): "--boundary_queries",
                 ("boundary", "spherical_step"): "--boundary_spherical_step",
                 ("boundary", "source_step"): "--boundary_source_step",
                 ("square", "max_queries"): "--square_queries",
                 ("square", "p_init"): "--square_p_init",
                 ("pgd_strong", "num_steps"): "--audit_pgd_steps",
                 ("pgd_strong", "restarts"): "--audit_pgd_restarts"}


def _validate_attack_options(options):
    """Checks every attack's options up front: a bad one must not surface hours in."""
    def bad(attack, key, expected):
        value = options[attack][key]
        name = _OPTION_FLAGS.get((attack, key), f"{attack} option {key}")
        raise TfnodeError(f"{name} must be {expected}, got {value!r}")

    count = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    unit = (lambda v: 0 < v <= 1, "in (0, 1]")
    fraction = (lambda v: 0 < v < 1, "in (0, 1)")
    checks = [(a, k, *rule) for a, k, rule in (
        ("pgd", "step_size", unit), ("pgd", "num_steps", count), ("pgd", "restarts", count),
        ("di2_fgsm", "step_size", unit), ("di2_fgsm", "num_steps", count),
        ("di2_fgsm", "resize_rate", unit),
        ("di2_fgsm", "diversity_prob", (lambda v: 0 <= v <= 1, "in [0, 1]")),
        ("di2_fgsm", "decay", (lambda v: v >= 0, ">= 0")),
        ("boundary", "max_queries", count), ("boundary", "spherical_step", fraction),
        ("boundary", "source_step", fraction), ("square", "max_queries", count),
        ("square", "p_init", unit), ("pgd_strong", "num_steps", count),
        ("pgd_strong", "restarts", count))]
    for attack, key, ok, expected in checks:
        if key in options.get(attack, {}) and not ok(options[attack][key]):
            bad(attack, key, expected)
    pgd = options.get("pgd", {})
    if pgd.get("restarts", 1) > 1 and not pgd.get("rand_init", True):
        raise TfnodeError("--pgd_restarts > 1 needs --pgd_rand_init (every run would be the "
                          "same)")


def evaluate(*, model_path, dataset="mnist", split="test", attacks_=("fgsm", "pgd"),
             eps=(0.1, 0.2, 0.3), eps_scale=1.0, num_examples=1000, batch_size=100,
             data_dir=None, compare_model_path=None, source_model_path=None,
             output_dir=None, attack_options=None, seed=0, audit=False,
             per_sample_steps=True, tolerance_grid=(), trajectories=False, record=None,
             log=print, verbose=1):
    """Runs the attack sweep and writes the report; returns the report dict.

    Args:
      model_path: the model to evaluate (see `load_model`).
      dataset: dataset name.
      split: dataset split.
      attacks_: attack names from `ATTACKS`.
      eps: Linf budgets on the [0, 1] pixel scale (already divided by ``eps_scale``).
      eps_scale: what the user's budgets were divided by (recorded, e.g. 255).
      num_examples: the first this many examples of the split are evaluated.
      batch_size: fixed batch size of every model call.
      data_dir: see `tfnode.data.load`.
      compare_model_path: a second model evaluated the same way (e.g. ResNet vs ODE-Net).
      source_model_path: model on which ``transfer`` crafts its adversarials.
      output_dir: where the report files go (default ``reports/<name>_<dataset>``).
      attack_options: ``{attack: {option: value}}`` over `DEFAULT_ATTACK_OPTIONS`.
      seed: seed of random starts, transforms and proposals.
      audit: also run `tfnode.audit.AUDIT_ATTACKS` (surrogate-gradient, stronger and
        unbounded PGD), the Square Attack and (with a source model) transfer, and add
        the checks and the verdict (minimum over all attacks) to the report.
      per_sample_steps: evaluate ODE models with per-sample dopri5 steps (same weights,
        `tfnode.models.with_solver_options`), so that no sample's prediction, and no
        attack on it, depends on its batch-mates. Where that is impossible (a bare
        SavedModel, TFP's adjoint solver) the model is used as it is and the report
        says why.
      tolerance_grid: ODE models: rtol = atol values; PGD (the ``pgd`` options) crafted
        through the model solved at each value is evaluated on the model solved at each
        value (attack-time vs inference-time tolerance, Carrara et al. 2019), per eps.
      trajectories: measure the paper's bound (`tfnode.trajectories`): how random and
        PGD perturbations of each eps grow along the ODE trajectory or through the
        residual blocks, and the ODE/residual function's empirical Lipschitz constant.
      record: extra settings to store (e.g. all flags of the app).
      log: where progress lines go.
      verbose: show progress bars.

    Returns:
      The report dict (also in ``report.json``), with ``"paths"`` of the files written.
    """
    start = time.time()
    options = {k: dict(v) for k, v in DEFAULT_ATTACK_OPTIONS.items()}
    for name, opts in (attack_options or {}).items():
        options.setdefault(name, {}).update(opts)
    eps = [float(e) for e in eps]
    attacks_ = list(dict.fromkeys(attacks_))
    validate(attacks_=attacks_, eps=eps, num_examples=num_examples, batch_size=batch_size,
             source_model_path=source_model_path, dataset=dataset, attack_options=options)
    tolerance_grid = [float(v) for v in tolerance_grid or ()]
    if any(not v > 0 for v in tolerance_grid):
        raise TfnodeError(f"--tolerance_grid takes tolerances > 0, got {tolerance_grid}")
    ds_info = data.info(dataset)
    paths = [("model", model_path)] + ([("compare", compare_model_path)]
                                       if compare_model_path else [])
    loaded = []
    for role, path in paths:
        model, info = load_model(path, flag="--model_path" if role == "model"
                                 else "--compare_model_path")
        _check_shape(info, ds_info, path)
        if per_sample_steps:
            model, info = _per_sample(model, info)
        loaded.append((model, info))
    source = None
    if "transfer" in attacks_ or (audit and source_model_path):
        source, source_info = load_model(source_model_path, flag="--source_model_path")
        _check_shape(source_info, ds_info, source_model_path)
    output_dir = output_dir or os.path.join(
        "reports", f"{model_label(loaded[0][1])}_{dataset}")
    reports.check_writable(output_dir, flag="--output_dir")

    images, labels = data.load_arrays(dataset, split, data_dir=data_dir)
    n = min(num_examples, len(labels))
    x = (images[:n].astype(np.float32) / 255.0)
    y = labels[:n].astype(np.int64)
    log(f"tfnode: evaluating {len(loaded)} model(s) on the first {n} {dataset} {split} "
        f"images, batch {batch_size}, attacks {', '.join(attacks_)}, eps "
        f"{', '.join(f'{e:g}' for e in eps)}")

    report = {"dataset": dataset, "split": split, "num_examples": n, "batch_size": batch_size,
              "eps": eps, "eps_scale": eps_scale, "attacks": attacks_, "seed": seed,
              "attack_options": (dict(options, audit_attacks={
                  k: {"attack": v[0], "overrides": v[1], "surrogate_solver_options": v[2]}
                  for k, v in audit_lib.AUDIT_ATTACKS.items()}) if audit
                  else {a: options[a] for a in attacks_}), "models": {},
              "audit": bool(audit), "per_sample_steps": bool(per_sample_steps),
              "tolerance_grid": tolerance_grid, "trajectories": bool(trajectories),
              "record": record or {}, "versions": reports.versions()}
    if source is not None:
        report["source_model"] = source_info
    labels_seen = set()
    for model, info in loaded:
        label = model_label(info)
        while label in labels_seen:
            label += "'"
        labels_seen.add(label)
        report["models"][label] = _evaluate_model(
            model, info, x, y, attacks_=attacks_, eps=eps, batch_size=batch_size,
            options=options, source=source, seed=seed, audit=audit, log=log,
            verbose=verbose)
        if tolerance_grid:
            report["models"][label]["tolerance_grid"] = _tolerance_grid(
                model, info, x, y, eps, tolerance_grid, batch_size, options["pgd"], seed,
                label, log, verbose)
        if trajectories:
            report["models"][label]["trajectories"] = _trajectories(
                model, info, x, y, eps, batch_size, options["pgd"], seed, label, log, verbose)
    report["warnings"] = sanity_warnings(report)
    report["wall_seconds"] = time.time() - start
    report["paths"] = write_report(report, output_dir)
    for w in report["warnings"]:
        log(f"tfnode: WARNING {w}")
    log(f"tfnode: report {report['paths']['md']}")
    return report


def model_label(info):
    """A short name for a loaded model: its trained model name, else its file/export name."""
    trained = info.get("trained") or {}
    base = os.path.basename(os.path.normpath(info["path"]))
    if trained.get("model"):
        return f"{trained['model']}"
    return info.get("name") or os.path.splitext(base)[0]


def _check_shape(info, ds_info, path):
    if tuple(info["input_shape"]) != tuple(ds_info.shape):
        raise TfnodeError(f"model {path!r} takes inputs of shape {tuple(info['input_shape'])}, "
                          f"but {ds_info.name} images are {tuple(ds_info.shape)}")


def _batches(n, batch_size):
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _progress(title, total, log, verbose):
    log(f"tfnode: {title}")
    return keras.utils.Progbar(total, verbose=1 if verbose else 0, unit_name="batch")


def _evaluate_model(model, info, x, y, *, attacks_, eps, batch_size, options, source, seed,
                    audit, log, verbose):
    label = model_label(info)
    n = len(y)
    t0 = time.time()
    clean_pred = attacks.predict(model, x, batch_size=batch_size)
    correct = clean_pred == y
    out = {"info": info, "clean_accuracy": float(correct.mean()),
           "clean_seconds": time.time() - t0, "checks": _model_checks(model, x, y, batch_size),
           "attacks": {}}
    log(f"tfnode: {label}: clean accuracy {out['clean_accuracy']:.4f} ({n} images)")
    names = list(attacks_)
    if audit:
        names += [a for a in audit_lib.audit_attacks(info, has_source=source is not None)
                  if a not in names]
    for name in names:
        cells = {}
        if name == "boundary":
            cells = _boundary_cells(model, x, y, correct, eps, batch_size, options[name],
                                    seed, f"{label}: boundary", log, verbose)
        else:
            fn, opts, crafted_on = _attack_plan(name, model, info, options, source)
            budgets = [audit_lib.UNBOUNDED_EPS] if name == "pgd_unbounded" else eps
            for e in budgets:
                cells[f"{e:g}"] = _gradient_cell(model, x, y, correct, name, e, batch_size,
                                                 fn, opts, crafted_on, seed,
                                                 f"{label}: {name} eps {e:g}", log, verbose)
        out["attacks"][name] = cells
    if audit:
        out["verdict"] = audit_lib.verdict(out, eps)
    return out


def _attack_plan(name, model, info, options, source):
    """``(attack function, options, model the attack differentiates)`` for a cell."""
    if name == "transfer":  # crafted on the source model, evaluated on this one
        base = options["transfer"]["attack"]
        return attacks.ATTACKS[base], dict(options[base]), source
    if name in audit_lib.AUDIT_ATTACKS:
        base, overrides, _ = audit_lib.AUDIT_ATTACKS[name]
        return (attacks.ATTACKS[base], {**options[base], **overrides, **options.get(name, {})},
                audit_lib.surrogate(model, info, name))
    return attacks.ATTACKS[name], dict(options[name]), model


def _craft(fn, crafted_on, x, y, e, batch_size, opts, seed, title, log, verbose):
    """Adversarials of ``fn`` (a white-box attack or Square) crafted on ``crafted_on``.

    Returns ``(x_adv, queries)``, queries per example for Square, else None.
    """
    seeded = fn is not attacks.fgsm
    bar = _progress(title, len(_batches(len(y), batch_size)), log, verbose)
    x_adv = np.empty_like(x)
    queries = np.zeros(len(y), np.int64) if fn is attacks.square_attack else None
    for k, (i, j) in enumerate(_batches(len(y), batch_size)):
        # A seed per batch: the same seed would give every batch the same random start.
        extra = {"seed": seed + k} if seeded else {}
        if queries is not None:
            found = fn(crafted_on, x[i:j], y[i:j], eps=e, batch_size=batch_size, **opts,
                       **extra)
            x_adv[i:j], queries[i:j] = found.x_adv, found.queries
        else:
            x_adv[i:j] = np.asarray(fn(crafted_on, x[i:j], y[i:j], eps=e, **opts, **extra))
        bar.update(k + 1)
    return x_adv, queries


def _gradient_cell(model, x, y, correct, name, e, batch_size, fn, opts, crafted_on, seed,
                   title, log, verbose):
    start = time.time()
    x_adv, queries = _craft(fn, crafted_on, x, y, e, batch_size, opts, seed, title, log,
                            verbose)
    adv_pred = attacks.predict(model, x_adv, batch_size=batch_size)
    cell = _cell_stats(x, x_adv, y, correct, adv_pred == y)
    if name == "square":
        cell.update(queries_mean=float(queries.mean()), queries_max=int(queries.max()))
    else:
        steps = opts.get("num_steps", 1) * opts.get("restarts", 1)
        cell["gradient_evaluations_per_example"] = steps
    cell.update(eps=e, seconds=time.time() - start)
    if crafted_on is not model:  # transfer or a surrogate: how the crafting model fared
        src_pred = attacks.predict(crafted_on, x_adv, batch_size=batch_size)
        cell["source_accuracy"] = float((src_pred == y).mean())
        cell["crafted_with"] = fn.__name__
    return cell


def _tolerance_grid(model, info, x, y, eps, tolerances, batch_size, pgd_opts, seed, label,
                    log, verbose):
    """Robust accuracy under PGD, attack-time tolerance x inference-time tolerance.

    Carrara et al. 2019 ("On the robustness of Neural ODEs"): an ODE-Net deployed at one
    tolerance and attacked through another can look robust only because of the gap.
    Row = rtol = atol of the model the PGD differentiates; column = of the model that
    classifies the adversarials (robust = correct on the clean image and the adversarial,
    both at the column's tolerance).
    """
    if info.get("format") != "keras" or not info.get("ode_blocks"):
        return {"skipped": "needs a Keras model with ODE blocks"}
    from tfnode import models

    variants = {tol: models.with_solver_options(model, rtol=tol, atol=tol)
                for tol in tolerances}
    clean = {tol: attacks.predict(m, x, batch_size=batch_size) == y
             for tol, m in variants.items()}
    out = {"tolerances": tolerances, "pgd": dict(pgd_opts), "eps": {},
           "clean_accuracy": [float(clean[t].mean()) for t in tolerances]}
    for e in eps:
        rows = []
        for attack_tol in tolerances:
            x_adv, _ = _craft(attacks.pgd, variants[attack_tol], x, y, e, batch_size, pgd_opts,
                              seed, f"{label}: pgd eps {e:g} through rtol=atol={attack_tol:g}",
                              log, verbose)
            rows.append([float((clean[t] & (attacks.predict(
                variants[t], x_adv, batch_size=batch_size) == y)).mean()) for t in tolerances])
        out["eps"][f"{e:g}"] = rows
    return out


def _trajectories(model, info, x, y, eps, batch_size, pgd_opts, seed, label, log, verbose):
    """`tfnode.trajectories` summaries for random-sign and PGD perturbations of each eps."""
    from tfnode import trajectories

    if info.get("format") != "keras":
        return {"skipped": "needs a Keras model (a bare SavedModel has no hidden states)"}
    if trajectories.stages(model) is None:
        return {"skipped": "needs a Keras model with one ODEBlock or with ResidualBlocks"}
    rng = np.random.default_rng(seed)
    out = {}
    for e in eps:
        random_x = np.clip(x + e * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype(x.dtype)
        adv_x, _ = _craft(attacks.pgd, model, x, y, e, batch_size, pgd_opts, seed,
                          f"{label}: trajectories, pgd eps {e:g}", log, verbose)
        out[f"{e:g}"] = {kind: trajectories.summarize(trajectories.measure(
            model, x, pert, batch_size=batch_size)) for kind, pert in
            (("random", random_x), ("pgd", adv_x))}
    return out


def _cell_stats(x, x_adv, y, correct, adv_correct):
    robust = correct & adv_correct
    fooled = correct & ~adv_correct
    l2, linf = attacks.distances(x_adv, x)
    # The clip range rounds; the budget check allows float32 rounding of x + delta.
    cell = {"robust_accuracy": float(robust.mean()),
            "attack_success_rate": (float(fooled.sum() / correct.sum())
                                    if correct.any() else None),
            "num_clean_correct": int(correct.sum()), "num_fooled": int(fooled.sum())}
    cell.update(_norm_stats(l2[fooled], linf[fooled]))
    cell["max_linf_all"] = float(linf.max(initial=0.0))
    return cell


def _norm_stats(l2, linf):
    if len(l2) == 0:
        return {"l2_mean": None, "l2_median": None, "linf_mean": None, "linf_median": None}
    return {"l2_mean": float(np.mean(l2)), "l2_median": float(np.median(l2)),
            "linf_mean": float(np.mean(linf)), "linf_median": float(np.median(linf))}


def _boundary_cells(model, x, y, correct, eps, batch_size, opts, seed, title, log, verbose):
    """One Boundary Attack run per example; an eps cell counts Linf-distance <= eps as fooled."""
    start = time.time()
    batches = _batches(len(y), batch_size)
    bar = _progress(title, len(batches), log, verbose)
    results = []
    for k, (i, j) in enumerate(batches):
        results.append(attacks.boundary_attack(model, x[i:j], y[i:j], seed=seed + k,
                                               batch_size=batch_size, **opts))
        bar.update(k + 1)
    x_adv = np.concatenate([r.x_adv for r in results])
    # The attack queried shrinking subsets of each batch; with an adaptive solver whose
    # step is shared by the batch, a decision can differ in the evaluation's fixed
    # batches. Only adversarials that also fool the model there count.
    is_adv = np.concatenate([r.is_adv for r in results])
    confirmed = attacks.predict(model, x_adv, batch_size=batch_size) != y
    unconfirmed = int(np.sum(is_adv & correct & ~confirmed))
    is_adv &= confirmed
    l2 = np.concatenate([r.l2 for r in results])
    linf = np.concatenate([r.linf for r in results])
    queries = np.concatenate([r.queries for r in results])
    initial_l2 = np.concatenate([r.initial_l2 for r in results])
    seconds = time.time() - start
    found = correct & is_adv
    summary = {"num_clean_correct": int(correct.sum()),
               "num_adversarial_found": int(found.sum()),
               "num_not_adversarial_in_fixed_batches": unconfirmed,
               "queries_mean": float(queries.mean()), "queries_max": int(queries.max()),
               "initial_l2_median": (float(np.median(initial_l2[found])) if found.any()
                                     else None),
               **_norm_stats(l2[found], linf[found]), "seconds": seconds}
    cells = {"all": summary}
    for e in eps:
        fooled = found & (linf <= e + 1e-6)
        cells[f"{e:g}"] = {
            "eps": e, "robust_accuracy": float((correct & ~fooled).mean()),
            "attack_success_rate": (float(fooled.sum() / correct.sum()) if correct.any()
                                    else None),
            "num_clean_correct": int(correct.sum()), "num_fooled": int(fooled.sum()),
            **_norm_stats(l2[fooled], linf[fooled]), "queries_mean": float(queries.mean()),
            "seconds": seconds}
    return cells


def _model_checks(model, x, y, batch_size):
    """Cheap checks of the model itself: determinism, batch dependence, usable gradients."""
    fn = attacks.logits_fn(model)
    xb, yb = x[:batch_size], y[:batch_size]
    a = fn(tf.constant(xb)).numpy()
    b = fn(tf.constant(xb)).numpy()
    checks = {"logits_max_diff_repeat": float(np.max(np.abs(a - b)))}
    if len(xb) > 1:
        alone = fn(tf.constant(xb[:1])).numpy()
        checks["logits_max_diff_alone_vs_batch"] = float(np.max(np.abs(alone[0] - a[0])))
    xt = tf.constant(xb)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=fn(xt))
    grad = tape.gradient(loss, xt)
    if grad is None:
        checks["zero_gradient_fraction"] = 1.0
        checks["nonfinite_gradient_fraction"] = 0.0
    else:
        g = grad.numpy().reshape(len(xb), -1)
        checks["zero_gradient_fraction"] = float(np.mean(np.all(g == 0, axis=1)))
        checks["nonfinite_gradient_fraction"] = float(np.mean(~np.all(np.isfinite(g), 1)))
    return checks


def sanity_warnings(report):
    """Warnings in the spirit of AutoAttack's ``checks.py`` and Carlini et al. 2019."""
    out = []
    for label, res in report["models"].items():
        c = res["checks"]
        if c["logits_max_diff_repeat"] > 1e-5:
            out.append(f"{label}: logits differ between two identical calls by "
                       f"{c['logits_max_diff_repeat']:.2g}: randomized model, use EOT")
        if c.get("logits_max_diff_alone_vs_batch", 0) > 1e-4:
            out.append(f"{label}: a sample's logits depend on its batch (max change "
                       f"{c['logits_max_diff_alone_vs_batch']:.2g} alone vs in a batch of "
                       f"{report['batch_size']}): the adaptive solver's step size is shared "
                       "by the batch; results hold for this batch size")
        if c["zero_gradient_fraction"] > 0 or c["nonfinite_gradient_fraction"] > 0:
            out.append(f"{label}: {c['zero_gradient_fraction']:.0%} of the input gradients "
                       f"are zero and {c['nonfinite_gradient_fraction']:.0%} non-finite: "
                       "gradient attacks are unreliable (gradient masking)")
        cells = res["attacks"]
        eps_keys = [f"{e:g}" for e in report["eps"]]
        for name, by_eps in cells.items():
            if any(k not in by_eps for k in eps_keys):
                continue  # e.g. pgd_unbounded, run at one eps of its own
            accs = [by_eps[k]["robust_accuracy"] for k in eps_keys]
            order = np.argsort(report["eps"])
            sorted_accs = [accs[i] for i in order]
            if any(b > a + 0.02 for a, b in zip(sorted_accs, sorted_accs[1:])):
                out.append(f"{label}: {name} robust accuracy rises with eps "
                           f"({', '.join(f'{a:.3f}' for a in accs)}): the attack is not "
                           "converging")
        for strong, weak in (("pgd", "fgsm"), ("di2_fgsm", "fgsm")):
            if strong in cells and weak in cells:
                for k in eps_keys:
                    a, b = cells[strong][k]["robust_accuracy"], cells[weak][k]["robust_accuracy"]
                    if a > b + 0.02:
                        out.append(f"{label}: iterative {strong} is weaker than single-step "
                                   f"{weak} at eps {k} ({a:.3f} vs {b:.3f}): a sign of "
                                   "gradient masking")
        white = [w for w in ("fgsm", "pgd", "di2_fgsm") if w in cells]
        for black in ("square", "boundary", "transfer"):
            if black in cells and white:
                for k in eps_keys:
                    best_white = min(cells[w][k]["robust_accuracy"] for w in white)
                    b = cells[black][k]["robust_accuracy"]
                    if b < best_white - 0.02:
                        out.append(f"{label}: black-box {black} beats every white-box attack "
                                   f"at eps {k} ({b:.3f} vs {best_white:.3f}): the gradients "
                                   "mislead (gradient masking)")
    return out


def markdown(report):
    """``report.md``: a table of robust accuracy (%) per attack and eps, per model."""
    eps_keys = [f"{e:g}" for e in report["eps"]]
    scale = report["eps_scale"]
    head = [f"{e:g}" if scale == 1 else f"{e * scale:g}/{scale:g}" for e in report["eps"]]
    lines = [f"# Robustness report: {report['dataset']} {report['split']}", "",
             f"{report['num_examples']} examples (the first of the split), batch "
             f"{report['batch_size']}, seed {report['seed']}. Robust accuracy (%): correct "
             "on the clean image and under the attack; Linf budgets eps on the [0, 1] scale"
             + (f" (given as x/{scale:g})" if scale != 1 else "") + ".", ""]
    for label, res in report["models"].items():
        v = res.get("verdict")
        if not v:
            continue
        lines += [f"## Verdict: {label}", "",
                  "Robust accuracy = the minimum over all attacks run: " + ", ".join(
                      f"eps {k}: **{100 * m['robust_accuracy']:.2f}%** ({m['attack']})"
                      for k, m in v["minimum"].items()) + ".",
                  "", ("**Gradient masking suspected**: a masking check failed."
                       if v["masking_suspected"] else "No check flags gradient masking."), ""]
        lines += [f"- {'PASS' if ch['passed'] else 'FAIL'}: {ch['check']}: {ch['detail']}"
                  for ch in v["checks"]] + [""]
    if report["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    lines += ["| model | attack | clean | " + " | ".join(f"eps {h}" for h in head) + " |",
              "|---|---|---|" + "---|" * len(head)]
    for label, res in report["models"].items():
        clean = f"{100 * res['clean_accuracy']:.2f}"
        for name, cells in res["attacks"].items():
            if name == "pgd_unbounded":
                continue  # one cell at eps 1, shown in the checks
            vals = [f"{100 * cells[k]['robust_accuracy']:.2f}" if k in cells else "-"
                    for k in eps_keys]
            lines.append(f"| {label} | {name} | {clean} | " + " | ".join(vals) + " |")
    lines.append("")
    for label, res in report["models"].items():
        b = res["attacks"].get("boundary", {}).get("all")
        if b:
            med = "n/a" if b["l2_median"] is None else f"{b['l2_median']:.3f}"
            lines.append(f"- {label}: Boundary Attack median L2 {med} over "
                         f"{b['num_adversarial_found']}/{b['num_clean_correct']} clean-correct "
                         f"examples made adversarial, {b['queries_mean']:.0f} queries on "
                         f"average (max {b['queries_max']})")
        lines.append(f"- {label}: {res['info']['path']} ({res['info']['format']}), "
                     f"per-sample steps {res['info'].get('per_sample_steps', 'off')}"
                     + (f", ODE blocks {res['info']['ode_blocks']}"
                        if res["info"].get("ode_blocks") else ""))
    if report.get("source_model"):
        src = report["source_model"]
        lines.append(f"- transfer: adversarials crafted on {model_label(src)} ({src['path']}) "
                     f"with {report['attack_options']['transfer']['attack']}")
    lines += _grid_markdown(report) + _trajectory_markdown(report)
    lines += ["", "Attack settings: `" + json.dumps(report["attack_options"], sort_keys=True)
              + "`", "", f"Versions: `{json.dumps(report['versions'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def _measured(report, key):
    """``(label, result)`` of the models whose optional measurement ``key`` ran."""
    return [(label, res[key]) for label, res in report["models"].items()
            if res.get(key) and "skipped" not in res[key]]


def _grid_markdown(report):
    lines = []
    for label, grid in _measured(report, "tolerance_grid"):
        tols = grid["tolerances"]
        lines += ["", f"### {label}: attack-time vs inference-time tolerance", "",
                  "PGD robust accuracy (%); row: rtol = atol of the model the attack "
                  "differentiates, column: of the model that classifies. Clean accuracy per "
                  "column: " + ", ".join(f"{t:g}: {100 * a:.2f}" for t, a in
                                         zip(tols, grid["clean_accuracy"])) + "."]
        for k, rows in grid["eps"].items():
            lines += ["", f"| eps {k}: attack \\ inference | " + " | ".join(
                f"{t:g}" for t in tols) + " |", "|---|" + "---|" * len(tols)]
            lines += [f"| {t:g} | " + " | ".join(f"{100 * v:.2f}" for v in row) + " |"
                      for t, row in zip(tols, rows)]
    return lines


def _trajectory_markdown(report):
    lines = []
    for label, traj in _measured(report, "trajectories"):
        first = next(iter(traj.values()))["random"]
        ode = first["kind"] == "ode"
        where, along, func = (("t", "the ODE trajectory", "ODE") if ode else
                              ("after block", "the residual blocks", "residual"))
        pos = first["positions"]
        mid, end = len(pos) // 2, len(pos) - 1
        lines += ["", f"### {label}: perturbation growth (Chu et al. 2020, Thm 3.1/3.2)", "",
                  f"|z - y| / |z(0) - y(0)| along {along} (median over samples, max in "
                  "brackets); |z - y| / |delta| at the end; empirical Lipschitz constant of "
                  f"the {func} function (median, max).",
                  "", f"| delta | eps | {where} {pos[mid]:g} | {where} {pos[end]:g} | "
                  "per input L2, end | Lipschitz median | Lipschitz max |",
                  "|---|---|---|---|---|---|---|"]
        for k, kinds in traj.items():
            for kind, sm in kinds.items():
                lips = [v for v in sm["lipschitz_median"] if v is not None]
                lmax = [v for v in sm["lipschitz_max"] if v is not None]
                lines.append(
                    f"| {kind} | {k} | {sm['growth_median'][mid]:.3f} ({sm['growth_max'][mid]:.3f})"
                    f" | {sm['growth_median'][end]:.3f} ({sm['growth_max'][end]:.3f}) | "
                    f"{sm['per_input_median'][end]:.3f} | {np.median(lips):.3f} | "
                    f"{max(lmax):.3f} |")
    return lines


@contextlib.contextmanager
def _figure(path, *, xlabel, ylabel, title, legend_size=7):
    """A 6x4 in. axes to draw on; labelled, then written to ``path`` atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
        fig.tight_layout()
        with reports.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def plot_trajectories(report, path):
    """``trajectories.png``: median perturbation growth vs relative depth, per model."""
    with _figure(path, xlabel="relative depth (t / t1, or block / number of blocks)",
                 ylabel="median |z - y| / |z(0) - y(0)|",
                 title="perturbation growth through the network", legend_size=6) as ax:
        for label, traj in _measured(report, "trajectories"):
            m = list(report["models"]).index(label)  # a model's colour as in the other plot
            for k, kinds in traj.items():
                for style, (kind, sm) in zip(("--", "-"), kinds.items()):
                    pos = np.asarray(sm["positions"], float)
                    ax.plot(pos / pos[-1], sm["growth_median"], style, marker=".",
                            color=f"C{m}", alpha=0.4 + 0.6 * (k == max(traj, key=float)),
                            label=f"{label} {kind} eps {k}")


def plot(report, path):
    """``accuracy_vs_eps.png``: one curve per attack (and model), clean accuracy at eps 0."""
    eps = sorted(report["eps"])
    styles = ["-", "--", ":", "-."]
    with _figure(path, xlabel="eps (Linf, [0, 1] pixel scale)", ylabel="accuracy (%)",
                 title=f"{report['dataset']}: accuracy vs eps "
                       f"({report['num_examples']} examples)") as ax:
        for m, (label, res) in enumerate(report["models"].items()):
            for a, (name, cells) in enumerate(res["attacks"].items()):
                if any(f"{e:g}" not in cells for e in eps):
                    continue
                accs = [res["clean_accuracy"]] + [cells[f"{e:g}"]["robust_accuracy"]
                                                  for e in eps]
                ax.plot([0.0] + eps, [100 * v for v in accs], styles[m % len(styles)],
                        marker="o", color=f"C{a}", label=f"{label} {name}")
        ax.set_ylim(0, 100)


def write_report(report, output_dir):
    """Writes the three report files atomically; returns their paths."""
    paths = {"json": os.path.join(output_dir, "report.json"),
             "md": os.path.join(output_dir, "report.md"),
             "png": os.path.join(output_dir, "accuracy_vs_eps.png")}
    plot(report, paths["png"])
    if _measured(report, "trajectories"):
        paths["trajectories_png"] = os.path.join(output_dir, "trajectories.png")
        plot_trajectories(report, paths["trajectories_png"])
    reports.write_text(paths["md"], markdown(report))
    reports.write_json(paths["json"], {**report, "paths": paths})
    return paths
