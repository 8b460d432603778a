"""Error types that users can cause, and the one-line account of a failed ODE solve.

Apps print ``str(err)`` (always one line naming the bad flag or value and what was
expected) and exit with status 2; they never show a traceback for these. A solve that
blows up (`solver_failure`) is reported the same way.
"""

import re

# In the message of the assertion of tfnode's adaptive loop (tfnode.layers.solvers).
SOLVER_FAILURE = "did not reach t1"


class TfnodeError(ValueError):
    """A user-facing error with a one-line message."""


class DataError(TfnodeError):
    """A dataset could not be found, fetched or verified."""


def solver_failure(err):
    """The one-line account of a failed ODE solve inside a TensorFlow error, or None.

    In a graph TF formats the loop's assertion as ``assertion failed: [text] [value]
    ...`` followed by the op trace; run eagerly, as ``Summarized data:`` and one part per
    line. Either way the parts are joined on one line.
    """
    text = getattr(err, "message", None) or str(err)
    if SOLVER_FAILURE not in text:
        return None
    if "Summarized data:" in text:
        body = text.split("Summarized data:", 1)[1].strip().splitlines()
        return " ".join(re.sub(r"""^b(['"])(.*)\1$""", r"\2", part.strip())
                        for part in body).replace(" ;", ";")
    for line in text.splitlines():
        if SOLVER_FAILURE in line:
            parts = re.findall(r"\[([^\[\]]*)\]", line) or [line.strip()]
            return " ".join(parts).replace("\\'", "'").replace(" ;", ";")
    return None
