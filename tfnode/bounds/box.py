"""Interval arithmetic on tensors: the boxes of interval bound propagation.

Gowal et al. 2018 ("On the Effectiveness of Interval Bound Propagation for Training
Verifiably Robust Models") propagate an axis-aligned box ``[lo, hi]`` through a network:
an affine map ``W x + b`` sends the box with center ``mu`` and radius ``r`` to center
``W mu + b`` and radius ``|W| r``; a monotone function (ReLU, average pooling) maps the
two corners. Every operation here returns a box that contains the image of every point
of its input boxes (sound), up to float32 rounding: the bounds are computed in float32
like the model, so a bound may be off by a few units in the last place (the tests allow
1e-5 relative slack; auto_LiRPA's IBP is sound in the same sense).

Boxes are combined as independent intervals: ``y + h f(y)`` bounds ``y`` and ``f(y)``
separately and adds them (the dependency problem), which is what makes IBP cheap and
loose, and why certified training (`tfnode.training.defenses` ``ibp``) trains the model
to make these particular bounds tight.
"""

from keras import ops


class Box:
    """Elementwise bounds ``lo <= x <= hi`` of a tensor ``x``.

    Not a tuple on purpose: Keras' graph walk (`tfnode.layers.through_graph`) passes it
    along an edge as one object.
    """

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    @classmethod
    def around(cls, x, eps, clip=(0.0, 1.0)):
        """The L-infinity ball of radius ``eps`` around ``x``, within the image range
        ``clip`` (the attacks' threat model)."""
        lo, hi = x - eps, x + eps
        if clip is not None:
            lo, hi = ops.clip(lo, *clip), ops.clip(hi, *clip)
        return cls(lo, hi)

    @property
    def center(self):
        return 0.5 * (self.lo + self.hi)

    @property
    def radius(self):
        return 0.5 * (self.hi - self.lo)

    def __add__(self, other):
        """The box of ``x + y``: ``other`` a box (independent) or a tensor / number."""
        if isinstance(other, Box):
            return Box(self.lo + other.lo, self.hi + other.hi)
        return Box(self.lo + other, self.hi + other)

    __radd__ = __add__

    def __sub__(self, other):
        return self + other.scale(-1.0)

    def scale(self, c):
        """The box of ``c * x``, for a number or a tensor ``c`` (any sign)."""
        a, b = c * self.lo, c * self.hi
        return Box(ops.minimum(a, b), ops.maximum(a, b))

    def monotone(self, fn):
        """The box of ``fn(x)`` for an elementwise non-decreasing ``fn`` (or a linear map
        with nonnegative weights: pooling, slicing, zero padding)."""
        return Box(fn(self.lo), fn(self.hi))

    def affine(self, center_fn, radius_fn):
        """The box of an affine map: ``center_fn(mu) = W mu + b``, ``radius_fn(r) = |W| r``."""
        mu, r = center_fn(self.center), radius_fn(self.radius)
        return Box(mu - r, mu + r)

    def map(self, fn):
        """``fn`` applied to both bounds, for maps that move every element as a block
        (split, concatenate, reshape)."""
        return Box(fn(self.lo), fn(self.hi))


def combination(terms):
    """The box of ``sum_i c_i x_i`` over ``(c_i, box_or_tensor_i)`` pairs; a zero ``c_i``
    or a None term is left out. The stage sums of a Runge-Kutta step."""
    out = None
    for c, x in terms:
        if x is None or (isinstance(c, (int, float)) and c == 0):
            continue
        term = x.scale(c) if isinstance(x, Box) else c * x
        out = term if out is None else (out + term if isinstance(out, Box) else term + out)
    return out


def relu(box):
    return box.monotone(ops.relu)


def square(box):
    """The box of ``x^2``: 0 below where the interval holds 0."""
    a, b = ops.square(box.lo), ops.square(box.hi)
    straddles = ops.logical_and(box.lo < 0, box.hi > 0)
    return Box(ops.where(straddles, ops.zeros_like(a), ops.minimum(a, b)), ops.maximum(a, b))


def times_positive(box, lo, hi):
    """The box of ``x * s`` for ``s`` in ``[lo, hi]`` with ``lo > 0``."""
    return Box(ops.minimum(box.lo * lo, box.lo * hi), ops.maximum(box.hi * lo, box.hi * hi))


def group_normalized(box, *, group_mean, group_size, epsilon):
    """The box of group normalization before its scale and offset:
    ``(x - m) / sqrt(v + epsilon)``, ``m``, ``v`` the group's mean and variance.

    ``group_mean(t)``: ``t``'s mean over its group, broadcast back to ``t``'s shape;
    ``group_size``: the elements in a group (``n``). Each
    centered element ``x_i - m = (1 - 1/n) x_i - (1/n) sum_{j != i} x_j`` is bounded
    exactly (n elements per group); the variance between the group means of the
    squares' bounds, so ``rsqrt(v + epsilon)`` between its values there. Sound but
    loose: nothing bounds the variance away from 0 when the input box is wide, which is
    why certified training uses ``norm="none"`` models (`tfnode.layers.NORMS`).
    """
    width = box.hi - box.lo
    n_inv = 1.0 / group_size
    centered = Box(box.lo - group_mean(box.hi) + width * n_inv,
                   box.hi - group_mean(box.lo) - width * n_inv)
    sq = square(centered)
    inv_std_lo = ops.rsqrt(group_mean(sq.hi) + epsilon)
    inv_std_hi = ops.rsqrt(group_mean(sq.lo) + epsilon)
    return times_positive(centered, inv_std_lo, inv_std_hi)
