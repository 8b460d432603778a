"""The evaluation on generated data and tiny models: report files, the audit on every kind
of ODE model, one decision path for the Boundary Attack, bad input, a quiet start."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags as absl_flags

from tfnode import attacks, evaluation, layers, models
from tfnode.errors import TfnodeError
from tfnode.evaluation import EvalConfig, audit, outcomes, plan, schedule
from tfnode.exports import read as loading, write as export

from tests.test_registry import tiny_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["--attack_option=pgd.num_steps=2", "--attack_option=di2_fgsm.num_steps=2",
         "--attack_option=apgd_ce.num_steps=2", "--attack_option=boundary.max_queries=30",
         "--attack_option=square.max_queries=20", "--num_examples=12", "--batch_size=6",
         # The tiny models classify the generated images at chance: the fast schedule
         # would attack almost nothing (tests/test_schedule.py tests it).
         "--schedule=exhaustive"]
# Every registered attack and audit variant, cut to a few steps or queries each.
TINY_AUDIT = {**{name: tiny_options(attacks.get(name)) for name in attacks.available()},
              **{v.name: {"num_steps": 2, "restarts": 1} for v in audit.VARIANTS}}


def run_app(argv):
    from tools import evaluate as app

    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["evaluate"] + argv)
    app.main(["evaluate"])


def tiny_cnn(input_shape=(28, 28, 1), seed=0, name="tiny"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(input_shape),
                             keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(10)], name=name)


def tiny_node(path, **options):
    keras.utils.set_random_seed(0)
    models.get_model("node", dataset="mnist", width=4, **options).save(path)
    return str(path)


@pytest.fixture
def saved(tmp_path):
    """An exported tiny CNN (SavedModel + model.keras) and a tiny ODE-Net .keras file."""
    path = export.export(tiny_cnn(), str(tmp_path / "savedmodels"), "tiny_mnist",
                         extra_files={"model.keras": tiny_cnn().save})
    return {"cnn": path, "node": tiny_node(tmp_path / "node.keras"), "tmp": tmp_path}


def test_evaluate_app_writes_the_three_report_files(mnist_dir, saved, capsys):
    out_dir = saved["tmp"] / "report"
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['node']}",
                     f"--compare_model_path={saved['cnn']}",
                     f"--source_model_path={saved['cnn']}",
                     "--attacks=fgsm,pgd,di2_fgsm,apgd_ce,square,boundary,transfer",
                     "--eps=25.5/255,76.5/255", f"--output_dir={out_dir}"])
    assert "report" in capsys.readouterr().out
    report = json.loads((out_dir / "report.json").read_text())
    assert (out_dir / "report.md").read_text().startswith("# Robustness report")
    assert (out_dir / "accuracy_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    assert report["eps"] == pytest.approx([0.1, 0.3]) and report["batch_size"] == 6
    assert report["config"]["attack_options"]["pgd"] == {"num_steps": 2}  # as given
    assert report["attack_options"]["square"]["p_init"] == 0.8  # MNIST's published default
    assert set(report["models"]) == {"node", "tiny"}
    node = report["models"]["node"]
    assert node["info"]["ode_blocks"][0]["solver"] == "dopri5"
    # ODE models are evaluated with per-sample steps: no logit depends on the batch.
    assert node["info"]["per_sample_steps"] == "applied"
    assert node["info"]["ode_blocks"][0]["per_sample_steps"] is True
    assert node["probes"]["logits_max_diff_alone_vs_batch"] < 1e-4
    stats = node["probes"]["solve_stats"]["ode_block"]  # the first batch's solve
    per_step = 6  # dopri5; the automatic first step costs 2 evaluations
    assert stats["nfe"] >= 2 + per_step * max(  # the slowest sample's steps, at least
        stats["accepted_steps"] + stats["rejected_steps"], 1)
    assert "- node: ode_block on the first batch: " in (out_dir / "report.md").read_text()
    assert report["models"]["tiny"]["info"]["per_sample_steps"].startswith("not applicable")
    assert "solve_stats" not in report["models"]["tiny"]["probes"]
    clean = outcomes.decode(node["clean_correct"])
    assert clean.mean() == node["clean_accuracy"]
    # The two models' clean predictions paired, in report.json and report.md.
    (paired,) = [c for c in report["comparisons"] if c["attack"] == "clean"]
    tiny = outcomes.decode(report["models"]["tiny"]["clean_correct"])
    assert paired["a_only"] == int((clean & ~tiny).sum()) and paired["eps"] is None
    assert (f"| node vs tiny | clean | {100 * paired['difference']:+.2f} | "
            f"{paired['a_only']} | {paired['b_only']} |") in (out_dir / "report.md").read_text()
    for name, entry in node["attacks"].items():
        assert entry["meta"]["kind"] == attacks.get(name).kind
        for key in ("0.1", "0.3"):
            cell = entry["cells"][key]
            robust = outcomes.decode(cell["robust"])
            # Robust means correct clean and attacked: never above clean accuracy.
            assert not np.any(robust & ~clean) and cell["robust_accuracy"] == robust.mean()
            assert cell["num_clean_correct"] == clean.sum()
            assert cell["num_fooled"] == clean.sum() - robust.sum()
            if name != "boundary" and cell["linf_median"] is not None:
                assert cell["linf_median"] <= float(key) + 1e-6
    wc = node["worst_case"]["0.1"]
    assert wc["robust_accuracy"] <= min(e["cells"]["0.1"]["robust_accuracy"]
                                        for e in node["attacks"].values())
    assert 0 < node["attacks"]["boundary"]["summary"]["queries_max"] <= 30
    assert node["attacks"]["transfer"]["meta"]["crafted_on"] == "source"
    assert "source_accuracy" in node["attacks"]["transfer"]["cells"]["0.1"]
    # The SavedModel-only path (no model.keras) also evaluates.
    (saved["tmp"] / "savedmodels" / "tiny_mnist" / "1" / "model.keras").unlink()
    run_app(STEPS + [f"--data_dir={mnist_dir}", f"--model_path={saved['cnn']}",
                     "--attacks=fgsm", "--eps=0.1", f"--output_dir={out_dir}2"])
    report2 = json.loads((saved["tmp"] / "report2" / "report.json").read_text())
    cnn = report["models"]["tiny"]
    only = report2["models"]["tiny_mnist/1"]
    assert only["info"]["format"] == "saved_model"
    assert only["info"]["per_sample_steps"].startswith("not applied")
    assert only["clean_accuracy"] == cnn["clean_accuracy"]
    assert only["attacks"]["fgsm"]["cells"]["0.1"]["robust_accuracy"] == pytest.approx(
        cnn["attacks"]["fgsm"]["cells"]["0.1"]["robust_accuracy"], abs=1 / 12)


@pytest.mark.parametrize("args,message", [
    (["--attacks=fgsm,cw"], "unknown attack 'cw'"),
    (["--eps=300/255"], "outside [0, 1]"),
    (["--eps=-0.1"], "outside [0, 1]"),
    (["--eps=0.1,0.2,0.1"], "eps 0.1 given twice"),
    (["--attacks=fgsm,pgd,fgsm"], "--attacks 'fgsm' given twice"),
    (["--eps=0.1,abc"], "--eps must be a comma-separated list"),
    (["--attacks=transfer"], "needs a source model"),
    (["--num_examples=0"], "num_examples must be"),
    (["--attack_option=pgd.num_steps=0"], "attack option pgd.num_steps must be an integer"),
    (["--attack_option=pgd.rand_init=maybe"], "attack option pgd.rand_init must be true"),
    (["--attack_option=pgd.steps=3"], "attack option pgd.steps: pgd has no option"),
    (["--attack_option=pgd"], "expected ATTACK.OPTION=VALUE"),
    (["--attack_option=cw.steps=3"], "attack options for unknown attack 'cw'"),
    (["--attack_option=pgd_strong.restarts=0", "--audit"],
     "attack option pgd_strong.restarts must be"),
    (["--attack_option=pgd_strong.restarts=0"], "attack option pgd_strong.restarts must be"),
    (["--seed=-1"], "seed must be an integer >= 0"),
    (["--attack_option=transfer.attack=boundary"], "transfer.attack must be one of"),
    (["--attack_option=pgd.restarts=2", "--attack_option=pgd.rand_init=false"],
     "restarts > 1 needs rand_init"),
    (["--tolerance_grid=1e-3,abc"], "--tolerance_grid must be"),
    (["--tolerance_grid=0,1e-3"], "--tolerance_grid must be a list of tolerances > 0"),
    (["--model_option=step_size=0.1"], "--model_option given, but"),
    (["--model_option=t1=2"], "--model_option t1: tools.evaluate takes solver"),
])
def test_bad_evaluate_input_is_one_line_and_exit_2(mnist_dir, saved, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_app([f"--data_dir={mnist_dir}", f"--model_path={saved['cnn']}",
                 f"--output_dir={saved['tmp'] / 'bad'}"] + args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err, err
    assert not (saved["tmp"] / "bad" / "report.json").exists()


def test_not_a_model_and_wrong_shape_are_one_line_errors(mnist_dir, saved, capsys):
    junk = saved["tmp"] / "junk.txt"
    junk.write_text("not a model")
    cifar_model = saved["tmp"] / "cifar.keras"
    tiny_cnn((32, 32, 3)).save(cifar_model)
    for path, message in ((junk, "is not a model"), (saved["tmp"], "is not a model"),
                          (cifar_model, "takes inputs of shape (32, 32, 3)")):
        with pytest.raises(SystemExit):
            run_app([f"--data_dir={mnist_dir}", f"--model_path={path}"])
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err


def test_the_app_starts_quietly(tmp_path):
    """No TensorFlow C++ start-up lines before the app's own one-line error."""
    proc = subprocess.run([sys.executable, "-m", "tools.evaluate",
                           f"--model_path={tmp_path / 'missing'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --model_path '{tmp_path / 'missing'}' is not a model: expected a .keras file "
        "or a SavedModel folder (savedmodels/<name>/<version>)"], proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("pair", [
    ({"solver": "euler", "step_size": 0.5}, {"solver": "rk4", "step_size": 0.5}),
    ({"gradient": "adjoint"}, {}),
], ids=["euler+rk4", "dopri5 adjoint+backprop"])
def test_audit_runs_on_every_kind_of_ode_model(mnist_dir, saved, pair):
    """Only the surrogates that differ from the model and that its blocks support."""
    first = tiny_node(saved["tmp"] / "a.keras", **pair[0])
    second = tiny_node(saved["tmp"] / "b.keras", **pair[1])
    report = evaluation.evaluate(EvalConfig(
        model_path=first, compare_model_path=second, source_model_path=saved["cnn"],
        data_dir=mnist_dir, attacks=("fgsm",), eps=(0.1,), num_examples=6,
        batch_size=6, attack_options=TINY_AUDIT, audit=True,
        output_dir=str(saved["tmp"] / "audit")), log=lambda *_: None, verbose=0)
    expected = {  # model options -> the solver surrogates it gets
        "euler": {"pgd_rk4"}, "rk4": {"pgd_rk4"},  # rk4 with step 0.5 differs from 0.1
        "adjoint": {"pgd_tight", "pgd_rk4"}, "backprop": {"pgd_adjoint", "pgd_tight",
                                                          "pgd_rk4"}}
    for label, res in report["models"].items():
        block = res["info"]["ode_blocks"][0]
        key = block["solver"] if block["solver"] != "dopri5" else block["gradient"]
        surrogates = {n for n, a in res["attacks"].items()
                      if a["meta"]["crafted_on"] == "surrogate"}
        assert surrogates == expected[key], (label, surrogates)
        assert set(res["audit_skipped"]) == {"pgd_adjoint", "pgd_tight", "pgd_rk4"} - surrogates
        for name in ("pgd_strong", "apgd_ce", "apgd_dlr", "square", "boundary", "transfer"):
            assert "0.1" in res["attacks"][name]["cells"], name
        # PGD was not asked for, yet runs: the stronger PGD and the surrogates are checked
        # against it.
        assert "pgd" in res["attacks"]
        assert any(f["check"] == "more steps/restarts do not help the defense"
                   for f in res["checks"])
        assert sum(f["check"].startswith("the model's own gradient")
                   for f in res["checks"]) == len(surrogates)
        assert res["attacks"]["pgd_unbounded"]["meta"]["role"] == "sanity"
        # The verdict's robust accuracy is the per-example worst case of the cells.
        wc = res["verdict"]["worst_case"]["0.1"]
        survive = np.all([outcomes.decode(res["attacks"][n]["cells"]["0.1"]["robust"])
                          for n in wc["attacks"]], axis=0)
        assert wc["robust_accuracy"] == survive.mean()
        assert "pgd_unbounded" not in wc["attacks"]
    md = (saved["tmp"] / "audit" / "report.md").read_text()
    assert "## Verdict" in md and "worst case" in md and "not run: pgd_adjoint" in md


def test_tolerance_grid_and_trajectories_in_the_report(mnist_dir, saved):
    euler = tiny_node(saved["tmp"] / "euler.keras", solver="euler", step_size=0.5)
    report = evaluation.evaluate(EvalConfig(
        model_path=saved["node"], compare_model_path=euler, data_dir=mnist_dir,
        attacks=("fgsm",), eps=(0.1, 0.3), num_examples=12, batch_size=6,
        attack_options={"pgd": {"num_steps": 2}}, tolerance_grid=(1e-2, 1e-4),
        trajectories=True, output_dir=str(saved["tmp"] / "grid")),
        log=lambda *_: None, verbose=0)
    grid = report["models"]["node"]["tolerance_grid"]
    assert grid["tolerances"] == [1e-2, 1e-4] and set(grid["eps"]) == {"0.1", "0.3"}
    assert grid["pgd"]["num_steps"] == 2  # the run's PGD settings
    for rows in grid["eps"].values():
        assert len(rows) == 2 and all(len(r) == 2 for r in rows)
        # Robust accuracy cannot exceed the clean accuracy of the classifying tolerance.
        for row in rows:
            assert all(0 <= v <= c for v, c in zip(row, grid["clean_accuracy"]))
    traj = report["models"]["node"]["trajectories"]
    for k in ("0.1", "0.3"):
        for kind in ("random", "pgd"):
            assert traj[k][kind]["kind"] == "ode" and len(traj[k][kind]["positions"]) == 11
            assert traj[k][kind]["growth_median"][0] == 1.0
    # Fixed-step blocks have no tolerance: every cell would be one model.
    euler_res = [r for label, r in report["models"].items() if label != "node"][0]
    assert euler_res["tolerance_grid"] == {
        "skipped": "not applicable: fixed-step ODE blocks have no tolerance"}
    assert euler_res["info"]["per_sample_steps"].startswith("not applicable: fixed-step")
    md = (saved["tmp"] / "grid" / "report.md").read_text()
    assert "attack-time vs inference-time tolerance" in md and "perturbation growth" in md
    assert "tolerance grid not applicable" in md
    assert (saved["tmp"] / "grid" / "trajectories.png").stat().st_size > 0


@pytest.mark.parametrize("xla", [True, False])
def test_boundary_adversarials_are_confirmed_by_the_attacks_own_computation(
        mnist_dir, saved, monkeypatch, xla):
    """At the decision boundary another compilation of the model may decide otherwise;
    the evaluation must confirm with the computation the attack queried (its ``xla``
    option)."""
    model, info = loading.load_model(saved["cnn"])
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype(np.float32)
    y = attacks.predict(model, x)
    # The path the attack does not query is replaced by one that differs (like another
    # compilation's rounding, but decisively larger): it favours every example's clean
    # class, undoing every adversarial.
    other = "logits_fn" if xla else "forward_fn"
    clean = getattr(attacks, other)(model)
    shift = keras.ops.one_hot(y, 10) * 100.0
    monkeypatch.setattr(attacks._utils, other,
                        lambda m, **_: (lambda v: clean(v) + shift[:len(v)]))
    target = schedule.Target(model, x, y, np.arange(6), np.ones(6, bool), 6, 0, False,
                           lambda *_: None, 0)
    spec = attacks.get("boundary")
    options = spec.options({"max_queries": 60, "xla": xla})
    job = plan.Job("boundary", spec, options, model, {"kind": spec.kind}, [1.0])
    out = schedule.run_job(target, job, {})
    found = spec.run(model, x, y, eps=None, seed=0, batch_size=6, **options).is_adv
    assert found.sum() >= 3
    assert out["summary"]["num_adversarial_found"] == found.sum()
    assert out["summary"]["num_found_not_confirmed_in_evaluation_batches"] == 0
    assert out["cells"]["1"]["num_fooled"] == found.sum()


@keras.saving.register_keras_serializable(package="tfnode_test")
class TracedODEBlock(layers.ODEBlock):
    """A user's subclass: it must survive re-solving with other options."""


def test_ode_block_subclasses_keep_their_class_and_get_per_sample_steps(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    out = TracedODEBlock(layers.ODEFunc(4), gradient="backprop")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(out)))
    path = tmp_path / "sub.keras"
    model.save(path)
    loaded, info = loading.load_model(str(path))
    assert len(info["ode_blocks"]) == 1
    per_sample, info = loading.with_per_sample_steps(loaded, info)
    assert info["per_sample_steps"] == "applied"
    blocks = [b for b in per_sample.layers if isinstance(b, layers.ODEBlock)]
    assert type(blocks[0]) is TracedODEBlock and blocks[0].per_sample_steps
    x = np.random.default_rng(0).random((2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(per_sample(x), loaded(x), atol=1e-2)


def test_an_audit_attack_named_in_attacks_runs_alone(mnist_dir, saved):
    """--attacks=pgd_adjoint: PGD through the adjoint beside PGD, without the rest of the
    audit; on a model it does not apply to (a CNN) it is skipped, with the reason."""
    report = evaluation.evaluate(EvalConfig(
        model_path=saved["node"], compare_model_path=saved["cnn"], data_dir=mnist_dir,
        attacks=("pgd_adjoint",), eps=(0.1,), num_examples=6, batch_size=6,
        attack_options={"pgd": {"num_steps": 2}, "pgd_adjoint": {"num_steps": 2}},
        output_dir=str(saved["tmp"] / "adjoint")), log=lambda *_: None, verbose=0)
    node, cnn = report["models"].values()
    assert list(node["attacks"]) == ["pgd", "pgd_adjoint"]
    assert node["attacks"]["pgd_adjoint"]["meta"]["crafted_on"] == "surrogate"
    assert node["attacks"]["pgd_adjoint"]["meta"]["options"]["num_steps"] == 2
    assert list(cnn["attacks"]) == ["pgd"] and "pgd_adjoint" in cnn["audit_skipped"]
    assert "verdict" not in node  # not an audit
    with pytest.raises(TfnodeError, match="unknown attack 'pgd_adjont'"):
        evaluation.evaluate(EvalConfig(model_path=saved["node"], attacks=("pgd_adjont",),
                                       data_dir=mnist_dir), log=lambda *_: None, verbose=0)


def test_certify_brackets_the_worst_case_and_merges_over_shards(mnist_dir, saved):
    node = tiny_node(saved["tmp"] / "fixed.keras", solver="rk4", step_size=0.5, norm="none")
    common = [f"--data_dir={mnist_dir}", f"--model_path={saved['cnn']}",
              f"--compare_model_path={node}", "--attacks=fgsm,pgd", "--eps=0.0001,0.1,0.5",
              "--certify", "--num_examples=12", "--batch_size=6",
              "--attack_option=pgd.num_steps=2", "--schedule=exhaustive"]
    out = saved["tmp"] / "cert"
    run_app(common + [f"--output_dir={out}"])
    report = json.loads((out / "report.json").read_text())
    for res in report["models"].values():
        clean = outcomes.decode(res["clean_correct"])
        for key in ("0.0001", "0.1"):
            cell = res["certified"][key]
            mask = outcomes.decode(cell["certified"])
            robust = outcomes.worst_case_mask(res, res["worst_case"][key]["attacks"], key)
            # Certified <= robust <= worst case, per example: a certified example is
            # clean-correct and no attack broke it.
            assert not np.any(mask & ~robust) and not np.any(mask & ~clean)
            assert cell["num_examples"] == 12 and cell["num_certified"] == mask.sum()
            assert cell["eps"] == float(key)  # the exact budget, beside its rounded key
        holds = [f for f in res["checks"] if f["check"] == "certificate holds"]
        assert len(holds) == 3 and all(f["passed"] for f in holds)
        # The grey image bounds the worst case from above at eps 0.5, per example.
        assert [f["eps"] for f in res["checks"]
                if f["check"].startswith("no more robust than the grey")] == ["0.5"]
    md = (out / "report.md").read_text()
    assert "The truth bracketed" in md and "at most (the grey image, class" in md
    # Two shards merged: the same certified examples as one run.
    for index in (0, 1):
        run_app(common + [f"--output_dir={saved['tmp'] / 'sharded'}", f"--shard={index}/2"])
    merged = evaluation.shards.merge(
        sorted(str(p) for p in (saved["tmp"] / "sharded" / "shards").iterdir()),
        str(saved["tmp"] / "merged"))
    for label, res in report["models"].items():
        assert merged["models"][label]["certified"]["0.0001"]["certified"] == \
            res["certified"]["0.0001"]["certified"]
        assert merged["models"][label]["certified"]["0.0001"]["eps"] == 0.0001
        # The mid-grey image's class, and which examples share its label, merge alike.
        assert merged["models"][label]["grey_image"] == res["grey_image"]
        assert outcomes.decode(res["grey_image"]["possible"]).size == 12
    # A shard written before the grey image was measured: the merge has none (not the
    # first shard's half-length mask), and its checks still run.
    second = saved["tmp"] / "sharded" / "shards" / "1-of-2" / "report.json"
    shard = json.loads(second.read_text())
    for res in shard["models"].values():
        del res["grey_image"]
    second.write_text(json.dumps(shard))
    mixed = evaluation.shards.merge(
        sorted(str(p) for p in (saved["tmp"] / "sharded" / "shards").iterdir()),
        str(saved["tmp"] / "mixed"))
    assert all("grey_image" not in res for res in mixed["models"].values())


def test_a_model_re_solved_at_a_finer_step_is_evaluated_and_said_so(mnist_dir, saved):
    """An rk4 ODE-Net trained at h 0.5 evaluated at h 0.25 (`--model_option=step_size=`):
    the first batch's solve costs 4 steps of 4 evaluations (8 at h 0.5), the report's
    info records the options and the blocks' new step, and the clean predictions are
    those of the same weights re-solved by hand. Options the blocks cannot be solved
    with are a one-line error naming the flag."""
    node = tiny_node(saved["tmp"] / "fixed.keras", solver="rk4", step_size=0.5, norm="none")
    out = saved["tmp"] / "finer"
    run_app([f"--data_dir={mnist_dir}", f"--model_path={node}", "--attacks=fgsm",
             "--eps=0.1", "--num_examples=12", "--batch_size=6", "--certify",
             "--model_option=step_size=0.25", f"--output_dir={out}"])
    res = json.loads((out / "report.json").read_text())["models"]["node"]
    assert res["info"]["solver_options"] == {"step_size": 0.25}
    assert [b["step_size"] for b in res["info"]["ode_blocks"]] == [0.25]
    assert res["probes"]["solve_stats"]["ode_block"]["nfe"] == 16
    assert "re-solved with {'step_size': 0.25} (not as trained)" in (
        out / "report.md").read_text()
    from tfnode import data

    images, labels = data.load_arrays("mnist", "test", data_dir=mnist_dir)
    finer = models.with_solver_options(keras.models.load_model(node), step_size=0.25)
    logits = finer.predict(images[:12].astype(np.float32) / 255.0, verbose=0)
    assert list(outcomes.decode(res["clean_correct"])) == list(
        np.argmax(logits, -1) == labels[:12])
    with pytest.raises(TfnodeError, match="solver_options .*needs step_size > 0"):
        loading.resolved(*loading.load_model(node), {"solver": "euler", "step_size": -1.0})
    with pytest.raises(TfnodeError, match="solver_options .*'abc'"):
        loading.resolved(*loading.load_model(node), {"step_size": "abc"})


def test_a_re_solve_turns_per_sample_steps_off_only_when_asked():
    """A block trained with per-sample steps keeps them through a re-solve unless
    ``--model_option=per_sample_steps=false`` is given too (TFP's adjoint refuses them)."""
    from tfnode.evaluation import runner

    adjoint = {"gradient": "adjoint"}
    assert runner._solver_options(EvalConfig(model_path="m", solver_options=adjoint,
                                             per_sample_steps=False)) == {
        "gradient": "adjoint", "per_sample_steps": False}
    assert runner._solver_options(EvalConfig(model_path="m", solver_options=adjoint)) == \
        adjoint
    assert runner._solver_options(EvalConfig(model_path="m", per_sample_steps=False)) == {}


def test_certify_refuses_an_adaptive_solver_in_one_line(mnist_dir, saved, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_app([f"--data_dir={mnist_dir}", f"--model_path={saved['node']}", "--certify",
                 f"--output_dir={saved['tmp'] / 'adaptive'}", "--num_examples=4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "choose a fixed-step solver" in err and "\n" not in err, err
    assert not (saved["tmp"] / "adaptive").exists()
