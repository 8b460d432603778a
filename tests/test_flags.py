"""Every experiment flagfile in flags/ parses with the app it is written for and holds
only that app's flags; the flag parsers of flags/configs.py; retired flags."""

import glob
import json
import os

import pytest
from absl import flags as absl_flags

from tests.test_architecture import app_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))


def _app(cfg):
    """The app a flagfile is written for, by its name."""
    name = os.path.basename(cfg)
    if name in ("paper.cfg", "robust.cfg"):  # docs/paper.md's and robust_results.md's pages
        return "report"
    if name.startswith("eval_"):
        return "evaluate"
    # A recipe only other flagfiles include (mnist_robust_recipe.cfg): train's flags.
    return "sweep" if name.endswith("_step_sizes.cfg") else "train"


def test_there_are_flagfiles_for_training_and_evaluation():
    names = [os.path.basename(c) for c in CFGS]
    assert "mnist_node.cfg" in names and "eval_mnist.cfg" in names


def _flag_names(cfg):
    """The flags a flagfile sets, through the flagfiles it includes."""
    names = set()
    for line in open(cfg):
        line = line.strip()
        if line.startswith("--flagfile="):
            names |= _flag_names(os.path.join(REPO, line.split("=", 1)[1]))
        elif line.startswith("--"):
            names.add(line[2:].split("=", 1)[0])
    return names


@pytest.mark.parametrize("cfg", CFGS, ids=os.path.basename)
def test_flagfile_sets_only_flags_of_its_app(cfg):
    """The tests load every app into one process, where a flag of another app would
    parse; a real process of the app would refuse it."""
    defined = app_flags()[f"tools/{_app(cfg)}.py"]
    assert _flag_names(cfg) and _flag_names(cfg) <= defined, _flag_names(cfg) - defined


@pytest.mark.parametrize("cfg", CFGS, ids=os.path.basename)
def test_flagfile_parses(cfg):
    from flags import configs
    from tools import evaluate, report, sweep, train  # noqa: F401  (define the apps' flags)

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", f"--flagfile={cfg}", "--model_path=savedmodels/m/1"])
    assert fv.dataset in ("mnist", "fashion_mnist", "cifar10")
    if _app(cfg) == "sweep":
        from tfnode.paper import step_sizes

        config = configs.sweep_config(fv)
        step_sizes.validate(config)  # every model, source and training option is valid
        assert len(config.step_sizes) >= 5 and config.eps == (0.1, 0.3, 0.5)
        assert config.transfer_attack == "fgsm"
    elif _app(cfg) == "report":
        assert fv.runs and fv.output in ("docs/paper.md", "docs/robust_results.md")
    elif _app(cfg) == "evaluate":
        config = configs.evaluate_config(fv)
        assert all(0 <= e <= 1 for e in config.eps)
        assert all(t > 0 for t in config.tolerance_grid)
        from tfnode import evaluation

        evaluation.resolve_options(config)  # every attack option in it is valid
    elif os.path.basename(cfg).endswith("_recipe.cfg"):
        # Included by the rows that add a model and a defense: each row is checked.
        assert any(f"--flagfile=flags/{os.path.basename(cfg)}" in open(c).read() for c in CFGS)
    else:
        from tfnode import training

        assert fv.export_name and fv.epochs >= 1
        # Every option in it is valid (model, optimizer, defense and its options).
        config = configs.train_config(fv)
        training.check(config)
        check = config.defense and training.defenses.get(config.defense).model_check
        if check:  # and the model is one the defense trains (ibp: bounds pass it)
            from tfnode import models

            check(models.get_model(config.model, dataset=config.dataset,
                                   **config.model_options))
    fv.unparse_flags()


def test_cifar_budgets_keep_their_pixel_units():
    from flags import configs
    from tools import evaluate  # noqa: F401

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", f"--flagfile={os.path.join(REPO, 'flags', 'eval_cifar10.cfg')}",
        "--model_path=m.keras"])
    try:
        config = configs.evaluate_config(fv)
    finally:
        fv.unparse_flags()
    assert config.eps_scale == 255.0
    assert config.eps == tuple(k / 255.0 for k in (1, 2, 4, 8, 16, 32, 50))


def test_the_parsers_of_lists_fractions_shards_and_options():
    from flags import configs
    from tfnode.errors import TfnodeError

    assert configs.floats("eps", ["0.1", "8/255"]) == (0.1, 8 / 255)
    assert configs.shard(None) == (0, 1) and configs.shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(TfnodeError, match=f"--shard {bad}: expected INDEX/COUNT"):
            configs.shard(bad)
    # tools.evaluate's shard: --shard wins; else TF_CONFIG's worker i of N, merged by the chief.
    os.environ.pop("TF_CONFIG", None)
    assert configs.evaluation_shard(None) == (0, 1, False)
    assert configs.evaluation_shard("1/4") == (1, 4, False)
    cluster = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}
    try:
        os.environ["TF_CONFIG"] = json.dumps({**cluster, "task": {"type": "worker", "index": 1}})
        assert configs.evaluation_shard(None) == (2, 3, True)
        assert configs.evaluation_shard("0/2") == (0, 2, False)
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["a:1"]},
                                              "task": {"type": "worker", "index": 0}})
        assert configs.evaluation_shard(None) == (0, 1, False)
    finally:
        os.environ.pop("TF_CONFIG", None)
    assert configs.options("model_option", ["rtol=1e-4", "gradient=adjoint",
                                            "per_sample_steps=true", "depth=8"],
                           "x=1") == {"rtol": 1e-4, "gradient": "adjoint",
                                      "per_sample_steps": True, "depth": 8}
    # Given again (a flagfile, then the command line): the last value.
    assert configs.options("model_option", ["rtol=1", "rtol=2"], "x=1") == {"rtol": 2}
    assert configs.value("8/255") == 8 / 255 and configs.value("a/b") == "a/b"
    with pytest.raises(TfnodeError, match="expected OPTION=VALUE"):
        configs.options("model_option", ["rtol"], "x=1")


@pytest.mark.parametrize("argv, expected", [
    ([], {"width": 32}),  # the short form's default, for a model that takes it
    # rtol's default is a float: 1 becomes 1.0; step_size's is None: as given.
    (["--solver=rk4", "--model_option=rtol=1", "--model_option=step_size=0.5"],
     {"width": 32, "solver": "rk4", "rtol": 1.0, "step_size": 0.5}),
    (["--model_option=width=8"], {"width": 8}),
])
def test_model_options_merge_the_short_forms(argv, expected):
    from flags import configs
    from tools import train  # noqa: F401

    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", "--model=node", *argv])
    try:
        got = configs.model_options(fv)
    finally:
        fv.unparse_flags()
    assert got == expected and all(type(got[k]) is type(v) for k, v in expected.items())


def test_a_model_option_overrides_its_short_form(tmp_path):
    from flags import configs
    from tools import train  # noqa: F401

    flagfile = tmp_path / "node.cfg"  # a flagfile's short form, the command line's option
    flagfile.write_text("--model=node\n--solver=dopri5\n--width=16\n--model_option=rtol=1e-3\n")
    fv = absl_flags.FLAGS
    fv.unparse_flags()
    fv(["app", f"--flagfile={flagfile}", "--model_option=solver=rk4",
        "--model_option=rtol=1e-4"])
    try:
        assert configs.model_options(fv) == {"solver": "rk4", "width": 16, "rtol": 1e-4}
    finally:
        fv.unparse_flags()


def test_each_flag_is_defined_once_whatever_the_app_order():
    from flags import common
    from tools import evaluate, sweep, train  # noqa: F401

    fv = absl_flags.FLAGS
    # One definition serves both apps: its help speaks of training and evaluation.
    assert "train" in fv["seed"].help and "evaluate" in fv["seed"].help
    assert "tools.evaluate" in fv["model_option"].help
    common.define_train_flags()  # a second call defines nothing again
    common.define_evaluate_flags()
    modules = fv.flags_by_module_dict()
    owners = [m for m, defined in modules.items() if any(f.name == "seed" for f in defined)]
    assert owners == ["flags.common"]


def test_no_app_defines_a_flag_it_would_refuse():
    """The tuner and the step-size sweep train without a defense, a run folder or an
    export; the sweep varies the step size and the tuner the tolerances, as values of
    --model_option that their configs refuse."""
    apps = app_flags()
    for app in ("tools/tune.py", "tools/sweep.py"):
        assert not apps[app] & {"defense", "defense_option", "model_dir", "overwrite",
                                "export_dir", "export_name", "deterministic"}, app
    assert "strategy" not in apps["tools/sweep.py"]


def test_no_retired_flag_is_defined_and_each_names_a_defined_replacement():
    from flags import retired

    apps = app_flags()
    every = set().union(*apps.values())
    assert not set(retired.RETIRED) & every
    assert {flag for flag, _ in retired.RETIRED.values()} <= every


def test_attack_options_parse_numbers_bools_and_names():
    from flags import configs

    assert configs.attack_options(["pgd.num_steps=100", "pgd.rand_init=false",
                                   "square.p_init=0.5", "transfer.attack=pgd"]) == {
        "pgd": {"num_steps": 100, "rand_init": False}, "square": {"p_init": 0.5},
        "transfer": {"attack": "pgd"}}


# PGD-AT's flagfile runs by default; TRADES' and YOPO's behind --run-slow (the suite's time
# on the slower machines): their losses are test_defenses.py's, their flags the same kind.
CIFAR_TRAINING = [c if "pgd_at" in c else pytest.param(c, marks=pytest.mark.slow)
                  for c in CFGS if os.path.basename(c).startswith("cifar10_")]


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
