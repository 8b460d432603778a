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
    from tools import evaluate, sweep, train  # noqa: F401  (define the apps' flags)

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", f"--flagfile={cfg}", "--model_path=savedmodels/m/1"])
    assert fv.dataset in ("mnist", "fashion_mnist", "cifar10")
    if os.path.basename(cfg).endswith("_step_sizes.cfg"):
        from flags import common
        from tfnode import sweep as sweep_lib

        config = common.sweep_config(fv)
        sweep_lib._validate(config)  # every model, source and training option is valid
        assert len(config.step_sizes) >= 5 and config.eps == (0.1, 0.3, 0.5)
    elif os.path.basename(cfg).startswith("eval_"):
        from flags import common

        config = common.evaluate_config(fv)
        assert all(0 <= e <= 1 for e in config.eps)
        assert all(t > 0 for t in config.tolerance_grid)
        from tfnode import evaluation

        evaluation.resolve_options(config)  # every attack option in it is valid
    else:
        from flags import common
        from tfnode import training

        assert fv.export_name and fv.epochs >= 1
        # Every option in it is valid (model, optimizer, defense and its options).
        training.check(common.train_config(fv))
    fv.unparse_flags()


CIFAR_TRAINING = [c for c in CFGS if os.path.basename(c).startswith("cifar10_")]


@pytest.mark.parametrize("cfg", CIFAR_TRAINING, ids=os.path.basename)
def test_cifar_training_flagfiles_run_unchanged_on_cifar_format_files(cfg, tmp_path,
                                                                      monkeypatch):
    """CIFAR-10 cannot be fetched here: each training flagfile runs on generated files in
    the exact python-batch format, a step of each epoch, its settings otherwise as
    given."""
    import json

    from tests.conftest import make_cifar_dataset, trust_md5
    from tests.test_train import run_app

    md5, _ = make_cifar_dataset(str(tmp_path / "cifar"), per_batch=4)
    trust_md5(monkeypatch, "cifar10", md5)
    monkeypatch.setenv("TFNODE_DATA_DIR", str(tmp_path / "cache"))
    run_app([f"--flagfile={cfg}", f"--data_dir={tmp_path / 'cifar'}", "--epochs=1",
             "--steps_per_epoch=1", "--batch_size=2", "--eval_batch_size=4",
             f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'sm'}"])
    absl_flags.FLAGS.unparse_flags()
    (metrics_file,) = glob.glob(str(tmp_path / "sm" / "*" / "1" / "assets.extra" / "metrics.json"))
    metrics = json.loads(open(metrics_file).read())
    assert metrics["dataset"] == "cifar10" and metrics["defense"]
    assert metrics["defense_options"]["eps"] == pytest.approx(8 / 255, abs=1e-3)


def test_each_flag_is_defined_once_whatever_the_app_order():
    from flags import common
    from tools import evaluate, sweep, train  # noqa: F401

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


# Slow (--run-slow): trains a CIFAR family on generated files; the flagfile's parse and
# options are checked by test_flagfile_parses.
@pytest.mark.slow
def test_the_cifar_step_size_sweep_runs_unchanged_on_cifar_format_files(tmp_path,
                                                                         monkeypatch):
    """flags/resnet56_step_sizes.cfg with two of its step sizes, a step of each epoch
    and four test images, on generated files in the CIFAR-10 python format."""
    import json

    from tests.conftest import make_cifar_dataset, trust_md5
    from tools import sweep as app

    md5, _ = make_cifar_dataset(str(tmp_path / "cifar"), per_batch=4)
    trust_md5(monkeypatch, "cifar10", md5)
    monkeypatch.setenv("TFNODE_DATA_DIR", str(tmp_path / "cache"))
    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["sweep", f"--flagfile={os.path.join(REPO, 'flags', 'resnet56_step_sizes.cfg')}",
        f"--data_dir={tmp_path / 'cifar'}", "--step_sizes=1,1e-10", "--epochs=1",
        "--steps_per_epoch=1", "--batch_size=2", "--num_examples=4",
        f"--output_dir={tmp_path / 'sweep'}"])
    try:
        app.main(["sweep"])
    finally:
        fv.unparse_flags()
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [m["step_size"] for m in sweep["members"]] == [1.0, 1e-10]
    assert sweep["source"]["model"] == "resnet56" and sweep["source"]["options"] == {"depth": 8}
    assert sweep["config"]["train_options"]["weight_decay"] == 1e-4
