"""`Registry`: the one name -> entry table behind every extension point (solvers,
models, attacks; torchdiffeq's ``SOLVERS``)."""

from tfnode.errors import TfnodeError


class Registry(dict):
    """A dict of ``name -> entry`` in registration order, each name registered once.

    Args:
      kind: what an entry is ("solver", "model", "attack"), for the error messages.
    """

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def add(self, name, entry):
        """Registers ``entry`` as ``name`` and returns it; a name can be taken once."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        return entry

    def lookup(self, name, expected=None):
        """The entry called ``name``; a one-line `TfnodeError` listing ``expected`` (by
        default every registered name) if there is none."""
        if name not in self:
            raise TfnodeError(f"unknown {self.kind} {name!r}; expected one of "
                              f"{list(self) if expected is None else expected}")
        return self[name]
