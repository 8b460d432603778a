"""Keras layers: the ODE block and the ODE / residual functions (the solvers are `tfnode.ode`)."""

from tfnode.layers.ode_block import ODEBlock, SolveMetric
from tfnode.layers.group_norm import NORMS, GroupNorm, group_mean, group_norm, no_xla, norm_layer
from tfnode.layers.odefunc import LIPSCHITZ, ConcatConv2D, ODEFunc, check_lipschitz
from tfnode.layers.residual import (FractalRK2Block, HeunBlock, PolyBlock, ResidualBlock,
                                   RevBlock, SchemeBlock, ShortcutA)
from tfnode.layers.tiny import TinyConfig
from tfnode.layers.walk import sublayers, through_graph

__all__ = ["LIPSCHITZ", "NORMS", "check_lipschitz", "ConcatConv2D", "FractalRK2Block", "GroupNorm", "HeunBlock", "ODEBlock", "ODEFunc",
           "PolyBlock", "ResidualBlock", "RevBlock", "SchemeBlock", "ShortcutA",
           "SolveMetric", "TinyConfig", "group_mean", "group_norm", "no_xla", "norm_layer", "sublayers", "through_graph"]
