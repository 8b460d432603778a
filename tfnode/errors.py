"""Error types that users can cause, and the one-line account of a failed ODE solve.

Apps print ``str(err)`` (always one line naming the bad flag or value and what was
expected) and exit with status 2; they never show a traceback for these. A solve that
blows up (`solver_failure`) is reported the same way.
"""

import re

# In the message of the assertion of tfnode's adaptive loop (tfnode.ode.adaptive_loop).
SOLVER_FAILURE = "did not reach t1"


class TfnodeError(ValueError):
    """A user-facing error with a one-line message."""


class DataError(TfnodeError):
    """A dataset could not be found, fetched or verified."""


class ConfigError(TfnodeError):
    """A config field with a value that cannot work: ``"<field> <problem>"``.

    The library names the config's field; an app names its flag instead
    (`flag_message`), so that the same check serves the library and every app. The
    problem may name other fields as ``{field}`` (``"pass {overwrite} to train it
    again"``): the field's name in the library's message, its flag in the app's. A dotted
    field names an option (``model_options.rtol``). ``field`` None: a failure whose
    message only mentions fields (``"try a lower {learning_rate}"``).
    """

    def __init__(self, field, problem):
        text = _mentions(problem, lambda name: name)
        super().__init__(text if field is None else f"{field} {text}")
        self.field, self.problem = field, problem

    def flag_message(self, flags=None):
        """The message with ``--<flag>`` for the field and each field it mentions.

        ``flags`` maps fields whose flag has another name; for a dotted field
        ``a.b`` whose ``a`` is mapped to ``F``, the flag is ``F=b``
        (``model_options.rtol`` -> ``--model_option=rtol``).
        """
        text = _mentions(self.problem, lambda name: _flag(name, flags or {}))
        return text if self.field is None else f"{_flag(self.field, flags or {})} {text}"


def _flag(field, flags):
    if field in flags:
        return f"--{flags[field]}"
    head, dot, rest = field.partition(".")
    if dot and head in flags:
        return f"--{flags[head]}={rest}"
    return f"--{field}"


def _mentions(problem, name):
    """``problem`` with each ``{field}`` replaced by ``name(field)``."""
    return re.sub(r"\{([a-z_][a-z0-9_.]*)\}", lambda m: name(m.group(1)), problem)


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
