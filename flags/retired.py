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


def hint(name, defined):
    """``"--rtol was replaced by ..."`` if ``name`` is a retired flag whose replacement
    the app defines (``defined``: its flag names), else None."""
    if name in RETIRED and RETIRED[name][0] in defined:
        return f"--{name} was replaced by {RETIRED[name][1]}"
    return None
