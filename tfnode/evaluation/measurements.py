"""The measurements beside the cells, where asked for: the attack-time x inference-time
tolerance grid (`tfnode.audit.tolerance_grid`) and the trajectories
(`tfnode.trajectories`). Both are defined with PGD (Carrara et al. 2019; the paper's
bound), at the run's PGD settings."""

import numpy as np

from tfnode import attacks, audit as audit_lib, trajectories
from tfnode.evaluation import batches, plan


def measure(run, sweep, info):
    """``{"tolerance_grid", "trajectories"}`` of one model, those ``run.config`` asks for.

    Args:
      run: the `tfnode.evaluation.plan.Run`.
      sweep: the model's `tfnode.evaluation.schedule.Sweep`.
      info: the model's info (`tfnode.loading.load_model`).
    """
    config, out = run.config, {}
    pgd_options = run.options.get("pgd") or attacks.get("pgd").options(dataset=config.dataset)

    def craft(on, e, title):
        job = plan.Job(title, attacks.get("pgd"), pgd_options, on, {}, [e])
        # The grid and the trajectories are defined with PGD's end point: no early exit.
        return batches.craft(sweep, job, e, np.arange(len(sweep.y)), early_exit=False)["x_adv"]

    if config.tolerance_grid:
        out["tolerance_grid"] = audit_lib.tolerance_grid(
            sweep.model, info, run.x, run.y, run.eps, config.tolerance_grid, craft=craft,
            predict=sweep.predict, pgd_options=pgd_options)
    if config.trajectories:
        out["trajectories"] = trajectories.report_entry(
            sweep.model, info, run.x, run.eps, craft=craft, batch_size=config.batch_size,
            seed=config.seed)
    return out
