"""Explicit Runge-Kutta methods as Butcher tableaux, and the registry of them.

A new solver is one `Tableau` here and one `register` call: the fixed-step loop, the
adaptive loops (batched and per-sample), the XLA-compiled step, `ODEBlock`, the flags and
the registry-driven tests (order conditions, exactness on polynomials, convergence order,
exact NFE) all read `TABLEAUX`.
"""

import dataclasses

from tfnode.registry import Registry


@dataclasses.dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method ``k_i = f(t + c_i h, y + h sum_j a_ij k_j)``.

    Attributes:
      name: registry name (the ``solver`` option of `ODEBlock`).
      c: nodes, one per stage; ``c[0] == 0``.
      a: the strictly lower-triangular matrix by rows: ``a[i]`` holds the ``i + 1``
        coefficients of stage ``i + 1`` (stage 0 has none).
      b: weights of the solution ``y + h sum_i b_i k_i``, one per stage.
      order: order of that solution.
      error: ``b - b_hat``, the weights of the local error estimate
        ``h sum_i error_i k_i`` against the embedded solution of order ``error_order``;
        None for a fixed-step method.
      error_order: order of the embedded solution (adaptive methods).
      fsal: first same as last: the last stage is ``f`` at the new solution, so an
        accepted step's last evaluation is the next step's first.
      reference: where the coefficients come from.
    """

    name: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    error: tuple | None = None
    error_order: int | None = None
    fsal: bool = False
    reference: str = ""

    def __post_init__(self):
        s = len(self.c)
        shape_ok = (len(self.b) == s and len(self.a) == s - 1 and self.c[0] == 0
                    and all(len(row) == i + 1 for i, row in enumerate(self.a)))
        if not shape_ok:
            raise ValueError(f"tableau {self.name!r}: c, a and b do not describe "
                             f"{s} explicit stages")
        if (self.error is None) != (self.error_order is None) or (
                self.error is not None and len(self.error) != s):
            raise ValueError(f"tableau {self.name!r}: error weights need one per stage "
                             "and an error_order")
        last_is_new_solution = (s > 1 and self.c[-1] == 1 and self.b[-1] == 0
                                and tuple(self.a[-1]) == self.b[:-1])
        if self.fsal and not (self.error is not None and last_is_new_solution):
            raise ValueError(f"tableau {self.name!r}: fsal needs an adaptive method whose "
                             "last stage is at c = 1 with b as its row of a")

    @property
    def stages(self):
        return len(self.c)

    @property
    def adaptive(self):
        """Whether the method has an error estimate (an embedded solution)."""
        return self.error is not None

    @property
    def evaluations_per_step(self):
        """Evaluations of ``f`` per step: every stage, except that an adaptive loop
        carries ``f(t, y)`` from step to step, which an FSAL method gets free (its last
        stage) and any other adaptive method pays one evaluation for, at the new
        solution, in place of its first stage."""
        return self.stages - (1 if self.fsal else 0)

    @property
    def step_exponent(self):
        """``1 / (q + 1)`` for an embedded order ``q``: the local error estimate scales
        as ``h^(q+1)``, so the step that meets the tolerance is
        ``h * ratio^(-1 / (q + 1))`` (Hairer, Norsett & Wanner, Solving ODEs I, II.4)."""
        return 1.0 / (self.error_order + 1)


TABLEAUX = Registry("solver")


def register(tableau):
    """Adds ``tableau`` to `TABLEAUX` under its name (once); returns it."""
    return TABLEAUX.add(tableau.name, tableau)


def get(name):
    """The tableau called ``name``; a one-line `TfnodeError` if there is none."""
    return TABLEAUX.lookup(name)


register(Tableau("euler", c=(0.0,), a=(), b=(1.0,), order=1,
                 reference="Euler (1768); a ResNet block is one step with h = 1"))
register(Tableau("midpoint", c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0), order=2,
                 reference="explicit midpoint rule (Runge 1895)"))
# Heun's method (the explicit trapezoidal rule): the scheme Lu et al. (2018) and Chu et
# al. (2020, Sec. 3) map FractalNet's two-path blocks to.
register(Tableau("heun", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), order=2,
                 reference="Heun (1900), explicit trapezoidal rule"))
register(Tableau("rk4", c=(0.0, 0.5, 0.5, 1.0), a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                 b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4,
                 reference="classical Runge-Kutta (Kutta 1901)"))

# Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett.
# 2(4): order 3, embedded order 2, FSAL (4 stages, 3 evaluations a step). The
# embedded weights are (7/24, 1/4, 1/3, 1/8).
_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
register(Tableau(
    "bosh3", c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((1 / 2,), (0.0, 3 / 4), _BS_B[:3]),
    b=_BS_B, order=3,
    error=tuple(b - bh for b, bh in zip(_BS_B, (7 / 24, 1 / 4, 1 / 3, 1 / 8))),
    error_order=2, fsal=True, reference="Bogacki & Shampine (1989)"))

# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comput. Appl.
# Math. 6(1): order 5, embedded order 4 (the weights below), FSAL (7 stages, 6
# evaluations a step). TFP's DormandPrince and torchdiffeq estimate the error with
# another embedded solution (Shampine 1986); see tfnode.ode.adjoint.
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
register(Tableau(
    "dopri5", c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=((1 / 5,),
       (3 / 40, 9 / 40),
       (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       _DP_B[:6]),
    b=_DP_B, order=5,
    error=tuple(b - bh for b, bh in zip(_DP_B, (
        5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40))),
    error_order=4, fsal=True, reference="Dormand & Prince (1980)"))


def _tsitouras():
    """Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column
    simplifying assumption", Comput. Math. Appl. 62(2), Table 1: order 5, embedded order
    4, FSAL (7 stages, 6 evaluations a step). The paper gives ``c``, ``a_ij`` for
    ``j >= 2`` and ``b`` to 16 digits; ``a_i1`` follows from the row sums
    ``sum_j a_ij = c_i``. Its error weights are printed as ``b - b_hat``, except that
    the last one's sign is flipped in print: it is ``-1/66`` (as in DifferentialEquations.jl
    and diffrax), which the embedded order conditions confirm (tests/test_solvers.py).
    """
    c = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
    tail = ((),
            (0.3354806554923570,),
            (-6.359448489975075, 4.362295432869581),
            (-11.74888356406283, 7.495539342889836, -0.09249506636175525),
            (-12.92096931784711, 8.159367898576159, -0.07158497328140100,
             -0.02826905039406838))
    b = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
         -3.290069515436081, 2.324710524099774, 0.0)
    a = tuple((ci - sum(row),) + row for ci, row in zip(c[1:], tail)) + (b[:6],)
    error = (0.001780011052226, 0.000816434459657, -0.007880878010262, 0.144711007173263,
             -0.582357165452555, 0.458082105929187, -1 / 66)
    return Tableau("tsit5", c=c, a=a, b=b, order=5, error=error, error_order=4, fsal=True,
                   reference="Tsitouras (2011)")


register(_tsitouras())
