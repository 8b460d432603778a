"""From the flags of `flags.common` to the library's config objects.

Each ``*_config`` function reads the flags of one app and returns the config its tfnode
function takes; tfnode modules are imported inside the functions, so that an app parses
its flags before TensorFlow is first imported (`tools._run.run_main`). Errors name the
flag; a library error names a config field, which `flag_names` maps back to its flag.
"""

import dataclasses

# Flags a model option may also be given by (``--solver=rk4`` for
# ``--model_option=solver=rk4``).
SHORT_FORMS = ("solver", "width")
# What tools.evaluate takes from --model_option: options of how a trained model is run,
# its ODE blocks' solver options (`tfnode.models.SOLVER_OPTIONS`; t1 would change what
# a block computes, not how it is solved).
INFERENCE_OPTIONS = ("solver", "rtol", "atol", "step_size", "first_step_size",
                     "max_num_steps", "gradient", "per_sample_steps")
# The tuner's options that are not the training recipe's (`TuneConfig`'s search fields).
TUNE_OPTIONS = ("tuner", "max_trials", "executions_per_trial", "objective", "eps",
                "pgd_steps", "nfe_weight", "robust_examples", "rtol_range", "atol_range",
                "solvers", "widths")


def flag_names(*, tune=False):
    """``{config field: flag}`` for fields whose flag has another name (for
    `tfnode.errors.ConfigError.flag_message`)."""
    names = {"num_shards": "shard", "shard_index": "shard", "eps_scale": "eps", "model_options": "model_option",
             "defense_options": "defense_option", "attack_options": "attack_option",
             "regularizer_options": "regularizer_option",
             "source_options": "source_option",
             "transfer_attack": "attack_option=transfer.attack",
             "per_sample_steps": "model_option=per_sample_steps",
             "solver_options": "model_option"}
    if tune:
        names.update({name: f"tune_option={name}" for name in TUNE_OPTIONS})
    return names


def _error(message):
    from tfnode.errors import TfnodeError

    return TfnodeError(message)


def value(text):
    """A flag value as a number, a bool or a string (``40``, ``0.01``, ``8/255``,
    ``true``, ``pgd``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    top, slash, bottom = text.partition("/")
    if slash:
        try:
            return float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            return text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def options(flag, values, example):
    """``["num_blocks=3", ...]`` -> ``{"num_blocks": 3}``; an option given again takes
    its last value, so that a command line overrides its flagfile."""
    out = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not (sep and key.strip() and text.strip()):
            raise _error(f"--{flag} {item!r}: expected OPTION=VALUE, e.g. {example}")
        out[key.strip()] = value(text)
    return out


def named_options(flag, values, example):
    """``["pgd.num_steps=100", ...]`` -> ``{"pgd": {"num_steps": 100}}`` (the last value
    of an option given again)."""
    out = {}
    for item in values:
        key, sep, text = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not (sep and dot and name and option and text.strip()):
            raise _error(f"--{flag} {item!r}: expected {flag.split('_')[0].upper()}."
                         f"OPTION=VALUE, e.g. {example}")
        out.setdefault(name, {})[option.strip()] = value(text)
    return out


def attack_options(values):
    """``["pgd.num_steps=100", ...]`` -> ``{"pgd": {"num_steps": 100}}``."""
    return named_options("attack_option", values, "pgd.num_steps=100")


def _options_of(kind, chosen, values, example):
    """``--<kind>_option`` values -> the options of ``chosen`` (``{}`` if none given);
    options of another name than ``--<kind>``'s are an error."""
    named = named_options(f"{kind}_option", values, example)
    other = sorted(set(named) - {chosen})
    if other:
        raise _error(f"--{kind}_option {other[0]}.*: options of {other[0]!r}, but "
                     + (f"--{kind}={chosen}" if chosen else f"no --{kind} is given"))
    return named.get(chosen, {})


def defense_options(defense, values):
    """``--defense_option`` values -> the options of ``defense`` (``{}`` if none given)."""
    return _options_of("defense", defense, values, "pgd_at.num_steps=10")


def regularizer_options(regularizer, values):
    """``--regularizer_option`` values -> the options of ``regularizer``."""
    return _options_of("regularizer", regularizer, values,
                       "kinetic_jacobian.jacobian_norm2=0.05")


def model_options(flag_values):
    """The model options of ``--model_option`` and its short forms (``--solver``,
    ``--width``).

    A short form left at its default is passed only to models that take it; one the user
    gave is always passed, so that a model which does not take it is an error; where
    ``--model_option`` gives the same option, its value wins (a flagfile's ``--solver``
    is overridden by ``--model_option=solver=rk4`` on the command line). An int
    given for an option whose default is a float (``step_size=1``) becomes that float.
    """
    from tfnode import models

    fv = flag_values
    given = options("model_option", fv.model_option, "rtol=1e-4")
    try:
        accepted = models.model_options(fv.model)
    except ValueError:  # an unknown model: the library reports it on one line
        accepted = {}
    for name in SHORT_FORMS:
        if name not in fv or fv[name].value is None:
            continue
        if name in given:
            continue
        if fv[name].present or name in accepted:
            given[name] = fv[name].value
    return {k: float(v) if isinstance(accepted.get(k), float) and type(v) is int else v
            for k, v in given.items()}


def floats(flag, values):
    """A list flag's values as numbers; ``a/b`` is a fraction (``8/255``)."""
    out = []
    for text in values:
        top, slash, bottom = text.partition("/")
        try:
            out.append(float(top) / float(bottom) if slash else float(text))
        except (ValueError, ZeroDivisionError):
            raise _error(f"--{flag} must be a comma-separated list of numbers (or "
                         f"fractions a/b), got {','.join(values)!r}") from None
    return tuple(out)


def budgets(flag_values):
    """``(eps, scale)``: the budgets of ``--eps`` on the [0, 1] scale, each checked, and
    the denominator they were given over (``255`` for ``8/255,16/255``; else 1), which
    the report shows them in."""
    given = list(flag_values.eps)
    eps = floats("eps", given)
    for text, e in zip(given, eps):
        if not 0.0 <= e <= 1.0:
            raise _error(f"--eps {text} is outside [0, 1], the pixel range of the inputs")
    bottoms = {t.partition("/")[2].strip() for t in given}
    scale = float(bottoms.pop()) if len(bottoms) == 1 and "" not in bottoms else 1.0
    return eps, scale


def shard(text):
    """``--shard=INDEX/COUNT`` -> ``(index, count)``; unset -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    index, slash, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = None
    if not slash or count is None or not 0 <= index < count:
        raise _error(f"--shard {text}: expected INDEX/COUNT with 0 <= INDEX < COUNT, "
                     "e.g. 0/4")
    return index, count


def evaluation_shard(text):
    """``(index, count, merge)`` of ``tools.evaluate``: ``--shard`` when given (the shards
    are merged by ``tools.merge_shards``); else, under ``TF_CONFIG``, worker i of N takes
    shard i and the chief (shard 0) merges them (`tfnode.evaluation.shards.wait_and_merge`);
    else one shard."""
    from tfnode import cluster

    place = cluster.place() if text is None else None
    if place is None or place[1] == 1:
        return (*shard(text), False)
    return (*place, True)


def train_config(flag_values):
    """The `tfnode.training.TrainConfig` of ``tools.train``'s flags (each flag is the
    field of the same name; ``--model_option`` and its short forms make
    ``model_options``)."""
    from tfnode.training import TrainConfig

    fv = flag_values
    fields = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name not in ("model_options", "defense_options", "regularizer_options")]
    return TrainConfig(**{name: fv[name].value for name in fields if name in fv},
                       model_options=model_options(fv),
                       defense_options=defense_options(fv.defense, fv.defense_option),
                       regularizer_options=regularizer_options(fv.regularizer,
                                                               fv.regularizer_option))


def recipe_fields(flag_values):
    """The `TrainConfig` fields of the model, recipe and data flags (no run folder, export
    or defense: ``tools.tune`` and ``tools.sweep`` train without them)."""
    names = ("model", "dataset", "data_dir", "batch_size", "seed", "epochs",
             "learning_rate", "optimizer", "lr_schedule", "validation_size", "weight_decay",
             "steps_per_epoch", "checkpoint_steps", "eval_batch_size", "strategy")
    return {name: flag_values[name].value for name in names if name in flag_values}


def tune_config(flag_values):
    """The `tfnode.training.tune.TuneConfig` of ``tools.tune``'s flags."""
    from tfnode.training import TrainConfig
    from tfnode.training.tune import RECIPE, TuneConfig

    fv = flag_values
    given = options("tune_option", fv.tune_option, "max_trials=20")
    unknown = sorted(set(given) - set(TUNE_OPTIONS))
    if unknown:
        raise _error(f"--tune_option {unknown[0]}: not an option of the search; expected "
                     f"one of {list(TUNE_OPTIONS)}")
    defaults = TuneConfig()
    search = {name: _typed(name, getattr(defaults, name), text)
              for name, text in _texts(fv.tune_option).items()}
    fields = recipe_fields(fv)
    if not fv["validation_size"].present:
        fields["validation_size"] = RECIPE.validation_size
    recipe = TrainConfig(**fields, model_options=model_options(fv))
    return TuneConfig(recipe=recipe, output_dir=fv.output_dir or defaults.output_dir,
                      **search)


def _texts(values):
    """``["max_trials=20", ...]`` -> ``{"max_trials": "20"}`` (the raw texts)."""
    return {item.partition("=")[0].strip(): item.partition("=")[2] for item in values}


def _typed(name, default, text):
    """A tune option's text as its default's type (a tuple default: a comma list)."""
    flag = f"tune_option={name}"
    if isinstance(default, tuple):
        items = [t for t in text.split(",") if t.strip()]
        if name.endswith("_range"):
            bounds = floats(flag, items)
            if len(bounds) != 2:
                raise _error(f"--{flag} {text}: expected LOW,HIGH")
            return bounds
        return tuple(value(t) for t in items)
    parsed = value(text)
    if isinstance(default, float) and type(parsed) is int:
        return float(parsed)
    return parsed


def sweep_config(flag_values):
    """The `tfnode.paper.step_sizes.SweepConfig` of ``tools.sweep``'s flags."""
    from tfnode.paper.step_sizes import SweepConfig

    fv = flag_values
    model = model_options(fv)
    transfer = attack_options(fv.attack_option)
    if set(transfer) - {"transfer"} or set(transfer.get("transfer", {})) - {"attack"}:
        raise _error("--attack_option: tools.sweep takes transfer.attack=NAME only (the "
                     "attack crafted on --source_model)")
    train = {k: v for k, v in recipe_fields(fv).items()
             if k not in ("model", "dataset", "data_dir", "strategy")}
    eps, _ = budgets(fv)
    defaults = SweepConfig()
    return SweepConfig(
        model=fv.model, dataset=fv.dataset, step_sizes=floats("step_sizes", fv.step_sizes),
        model_options=model, train_options=train, source_model=fv.source_model,
        source_options=options("source_option", fv.source_option, "num_blocks=3"),
        transfer_attack=transfer.get("transfer", {}).get("attack",
                                                         defaults.transfer_attack),
        eps=eps, num_examples=fv.num_examples,
        batch_size=fv.eval_batch_size or fv.batch_size, data_dir=fv.data_dir,
        output_dir=fv.output_dir or f"reports/{fv.model}_{fv.dataset}_step_sizes")


def evaluate_config(flag_values):
    """The `tfnode.evaluation.EvalConfig` of ``tools.evaluate``'s flags."""
    from tfnode.evaluation import EvalConfig

    fv = flag_values
    if not fv.model_path:
        raise _error("--model_path is required: an export folder "
                     "(savedmodels/<name>/<version>) or a .keras file")
    inference = options("model_option", fv.model_option, "per_sample_steps=false")
    other = sorted(set(inference) - set(INFERENCE_OPTIONS))
    if other:
        raise _error(f"--model_option {other[0]}: tools.evaluate takes "
                     f"{', '.join(INFERENCE_OPTIONS)} only (the model's other options "
                     "are fixed by its training)")
    eps, scale = budgets(fv)
    shard_index, num_shards, merge = evaluation_shard(fv.shard)
    return EvalConfig(
        model_path=fv.model_path, dataset=fv.dataset, split=fv.split,
        attacks=tuple(a.strip() for a in fv.attacks if a.strip()), eps=eps,
        eps_scale=scale, num_examples=fv.num_examples, batch_size=fv.batch_size,
        data_dir=fv.data_dir, compare_model_path=fv.compare_model_path,
        source_model_path=fv.source_model_path, output_dir=fv.output_dir,
        attack_options=attack_options(fv.attack_option), seed=fv.seed, audit=fv.audit,
        per_sample_steps=inference.pop("per_sample_steps", True), solver_options=inference,
        tolerance_grid=floats("tolerance_grid", fv.tolerance_grid),
        trajectories=fv.trajectories, schedule=fv.schedule, num_shards=num_shards,
        shard_index=shard_index, merge_shards=merge, certify=fv.certify)


def export_kwargs(flag_values):
    """Arguments of `tfnode.exports.write.export_trained` from ``tools.export``'s flags."""
    fv = flag_values
    return dict(source=fv.model_path, export_dir=fv.export_dir, name=fv.export_name,
                version=fv.version, report=fv.report,
                # The architecture only matters for a weights file; --model given or not.
                model=fv.model if fv["model"].present else None, dataset=fv.dataset,
                model_options=model_options(fv))
