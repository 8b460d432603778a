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

        config = common.evaluate_config(fv)
        assert all(0 <= e <= 1 for e in config.eps)
        assert all(t > 0 for t in config.tolerance_grid)
        from tfnode import evaluate

        evaluate.resolve_options(config)  # every attack option in it is valid
    else:
        assert fv.export_name and fv.epochs >= 1
    fv.unparse_flags()


def test_each_flag_is_defined_once_whatever_the_app_order():
    from flags import common
    from tools import evaluate, train  # noqa: F401

    fv = absl_flags.FLAGS
    # One definition serves both apps: its help speaks of training and evaluation.
    assert "train" in fv["seed"].help and "evaluate" in fv["seed"].help
    assert "training" in fv["per_sample_steps"].help and "evaluating" in fv[
        "per_sample_steps"].help
    common.define_train_flags()  # a second call defines nothing again
    common.define_evaluate_flags()
    modules = fv.flags_by_module_dict()
    owners = [m for m, defined in modules.items() if any(f.name == "seed" for f in defined)]
    assert owners == ["flags.common"]


def test_attack_options_parse_numbers_bools_and_names():
    from flags import common

    assert common.attack_options(["pgd.num_steps=100", "pgd.rand_init=false",
                                  "square.p_init=0.5", "transfer.attack=pgd"]) == {
        "pgd": {"num_steps": 100, "rand_init": False}, "square": {"p_init": 0.5},
        "transfer": {"attack": "pgd"}}
