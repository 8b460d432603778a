"""Flags that existed once, and what replaced each: an app given one says so on one line
(`tools._run.parse_flags`), so that an old command or flagfile fails with its fix."""

MODEL_OPTION = "--model_option={name}=VALUE"
TUNE_OPTION = "--tune_option={name}=VALUE"

# {old flag: (the flag that replaces it, how to write it)}
RETIRED = {
    **{name: ("model_option", MODEL_OPTION.format(name=name))
       for name in ("rtol", "atol", "first_step_size", "step_size", "gradient",
                    "per_sample_steps")},
    **{name: ("tune_option", TUNE_OPTION.format(name=name))
       for name in ("tuner", "max_trials", "executions_per_trial", "objective", "pgd_steps",
                    "nfe_weight", "robust_examples", "rtol_range", "atol_range", "solvers",
                    "widths")},
    "tune_eps": ("tune_option", TUNE_OPTION.format(name="eps")),
    "tune_dir": ("output_dir", "--output_dir"),
    "eps_scale": ("eps", "fractions in --eps, e.g. --eps=8/255,16/255"),
    "num_shards": ("shard", "--shard=INDEX/COUNT (INDEX from 0), e.g. --shard=0/4"),
    "shard_index": ("shard", "--shard=INDEX/COUNT (INDEX from 0), e.g. --shard=0/4"),
    "transfer_attack": ("attack_option", "--attack_option=transfer.attack=NAME"),
}


# Where an app's replacement is not the general one: {app: {old flag: how to write it,
# or None where the app never took that setting}}.
_NOT_EVALUATED = ("rtol", "atol", "first_step_size", "step_size", "gradient")
BY_APP = {
    "tune": {"rtol": "--tune_option=rtol_range=LOW,HIGH (the search's range)",
             "atol": "--tune_option=atol_range=LOW,HIGH (the search's range)"},
    "sweep": {"step_size": "--step_sizes (the sweep's list)", "tune_dir": None},
    "evaluate": {**dict.fromkeys(_NOT_EVALUATED), "tune_dir": None},
    "export": {"tune_dir": None},
    "merge_shards": {"tune_dir": None},
}


def hint(name, defined, app=None):
    """``"--rtol was replaced by ..."`` if ``name`` is a retired flag whose replacement
    the app (``app``: its module name, e.g. ``"tune"``) defines (``defined``: its flag
    names), else None."""
    if name not in RETIRED or RETIRED[name][0] not in defined:
        return None
    text = BY_APP.get(app, {}).get(name, RETIRED[name][1])
    return f"--{name} was replaced by {text}" if text else None
