"""The measurements beside the cells, where asked for: the attack-time x inference-time
tolerance grid (`tfnode.evaluation.audit.tolerance_grid`) and the trajectories
(`tfnode.evaluation.trajectories`). Both are defined with PGD (Carrara et al. 2019; the paper's
bound), at the run's PGD settings."""

import numpy as np

from tfnode import attacks
from tfnode.evaluation import audit as audit_lib, batches, plan, trajectories


def measure(run, target, info):
    """``{"tolerance_grid", "trajectories"}`` of one model, those ``run.config`` asks for.

    Args:
      run: the `tfnode.evaluation.plan.Run`.
      target: the model's `tfnode.evaluation.schedule.Target`.
      info: the model's info (`tfnode.exports.read.load_model`).
    """
    config, out = run.config, {}
    pgd_options = run.options.get("pgd") or attacks.get("pgd").options(dataset=config.dataset)

    def craft(on, e, title):
        job = plan.Job(title, attacks.get("pgd"), pgd_options, on, {}, [e])
        # The grid and the trajectories are defined with PGD's end point: no early exit.
        return batches.craft(target, job, e, np.arange(len(target.y)), early_exit=False)["x_adv"]

    if config.tolerance_grid:
        out["tolerance_grid"] = audit_lib.tolerance_grid(
            target.model, info, run.x, run.y, run.eps, config.tolerance_grid, craft=craft,
            predict=target.predict, pgd_options=pgd_options)
    if config.trajectories:
        out["trajectories"] = trajectories.report_entry(
            target.model, info, run.x, run.eps, craft=craft, batch_size=config.batch_size,
            seed=config.seed)
    return out
