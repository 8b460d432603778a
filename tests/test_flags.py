"""Every experiment flagfile in flags/ parses with the app it is written for."""

import glob
import os

import pytest
from absl import flags as absl_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))


def test_there_are_flagfiles_for_training_and_evaluation():
    names = [os.path.basename(c) for c in CFGS]
    assert "mnist_node.cfg" in names and "eval_mnist.cfg" in names


@pytest.mark.parametrize("cfg", CFGS, ids=os.path.basename)
def test_flagfile_parses(cfg):
    from tools import evaluate, train  # noqa: F401  (define both apps' flags)

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", f"--flagfile={cfg}", "--model_path=savedmodels/m/1"])
    assert fv.dataset in ("mnist", "fashion_mnist", "cifar10")
    if os.path.basename(cfg).startswith("eval_"):
        from flags import common

        kwargs = common.evaluate_kwargs(fv)
        assert all(0 <= e <= 1 for e in kwargs["eps"])
        assert all(t > 0 for t in kwargs["tolerance_grid"])
    else:
        assert fv.export_name and fv.epochs >= 1
    fv.unparse_flags()
