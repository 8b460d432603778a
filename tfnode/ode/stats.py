"""`SolveStats`: what one solve cost, as every loop of `tfnode.ode` returns it."""

import collections


class SolveStats(collections.namedtuple("SolveStats", "nfe steps accepted rejected")):
    """What one solve cost.

    Attributes:
      nfe: evaluations of ``fn`` (int32 scalar), every one counted: the initial ``f``,
        the automatic first step's probe, and each trial step's stages.
      steps: trial steps taken (int32 scalar); with per-sample steps, iterations of the
        batched loop (the slowest sample's trial steps).
      accepted: accepted steps (int32; one per sample, ``[N]``, with per-sample steps);
        None where TFP solves (it does not report them).
      rejected: rejected steps, likewise. ``accepted + rejected == steps`` (per sample:
        at most ``steps``, equal for the slowest sample), and
        ``nfe == initial + steps * evaluations_per_step`` (`Tableau.evaluations_per_step`).
    """
