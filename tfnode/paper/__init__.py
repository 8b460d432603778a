"""The paper's experiments (Chu, Wei & Zhao 2020), run and held against its claims.

Modules: `step_sizes` (the step-size sweep of Sec. 4.1: trains, evaluates and tabulates
one model family, one step size h each) and the results page: `page` (the document and
its writer) over `verdicts` (the paper's claims judged from the measured numbers) over
`runs` (the runs gathered from their files).
"""

from tfnode.paper.page import PAPER, RELATED, document, write
from tfnode.paper.runs import gather
from tfnode.paper.step_sizes import SweepConfig, run_sweep
from tfnode.paper.claims import CLAIMS, Claim
from tfnode.paper.verdicts import clean_warnings, judge

__all__ = ["CLAIMS", "Claim", "PAPER", "RELATED", "SweepConfig", "clean_warnings", "judge",
           "document", "gather", "run_sweep", "write"]
