"""Keras layers: the ODE block, its solvers, and the ODE / residual functions."""

from tfnode.layers.ode_block import ODEBlock, SolveMetric
from tfnode.layers.odefunc import ConcatConv2D, GroupNorm, ODEFunc, group_norm, no_xla
from tfnode.layers.residual import (FractalBlock, HeunBlock, PolyBlock, ResidualBlock,
                                   RevBlock, SchemeBlock, ShortcutA)
from tfnode.layers.solvers import SOLVERS

__all__ = ["ConcatConv2D", "FractalBlock", "GroupNorm", "HeunBlock", "ODEBlock", "ODEFunc",
           "PolyBlock", "ResidualBlock", "RevBlock", "SOLVERS", "SchemeBlock", "ShortcutA",
           "SolveMetric", "group_norm", "no_xla"]
