"""The adversarial evaluation: ``evaluate(EvalConfig(...))`` runs the attacks and
writes its report; ``shards.merge`` joins the reports of a sharded run.

Modules: `config` (`EvalConfig`, the option checks, the schedules' conventions), `plan`
(which attack jobs run on which model), `batches` (crafting in batches, padding, the
confirmation of an early exit), `schedule` (one job's cells under the fast or the
exhaustive schedule), `measurements` (tolerance grid, trajectories), `runner`
(`evaluate`: named steps); shared by the runner and the merge: `cells` (pure cell
arithmetic) and `arrays` (per-example arrays); `shards` (the merge, which never imports
the runner). Below them: `audit` (the gradient-masking audit's plan and verdict),
`progress` (the finished cells on disk), `trajectories` (the paper's bound), `checks`
(sanity and masking checks over a result) and `outcomes` (per-example outcomes, the
worst case).
"""

from tfnode.evaluation.config import SCHEDULES, EvalConfig, conventions, resolve_options
from tfnode.evaluation.runner import evaluate

__all__ = ["SCHEDULES", "EvalConfig", "conventions", "evaluate", "resolve_options"]
