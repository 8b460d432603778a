"""The fast evaluation schedule: early exit (counted model calls), per-sample results that
do not depend on the batch, monotone eps, never more robust than the exhaustive schedule,
and sharded runs that merge to the unsharded report."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from tfnode import attacks, data, evaluation, layers
from tfnode.evaluation import outcomes
from tfnode.evaluation import plan, schedule, shards
from tfnode.errors import TfnodeError
from tfnode.evaluation import EvalConfig



def tiny_cnn(seed=0):
    # Not imported from tests.test_evaluate: a second import of that module would
    # register its Keras test layer class again, under another module name.
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)),
                             keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(10)], name="tiny")

N, CLASSES, SPACING = 8, 3, 0.1


class Recorder:
    """A linear model that records every call: which samples (decoded from pixel 0,
    which holds ``SPACING * id + SPACING / 2``: no attack within eps < SPACING / 2 can
    change the decoding), their inputs and logits."""

    def __init__(self, shape=(4, 4, 1), seed=0):
        rng = np.random.default_rng(seed)
        self.w = tf.constant(rng.normal(size=(int(np.prod(shape)), CLASSES)), tf.float32)
        self.calls = []

        def record(x, logits):
            ids = np.round((x.reshape(len(x), -1)[:, 0] - SPACING / 2) / SPACING)
            self.calls.append((ids.astype(int), x.copy(), logits.copy()))
            return np.int64(0)

        @tf.function
        def model(x):
            logits = tf.matmul(tf.reshape(x, (tf.shape(x)[0], -1)), self.w)
            tf.numpy_function(record, [x, logits], tf.int64)
            return logits

        self.model = model

    def images(self):
        rng = np.random.default_rng(1)
        x = rng.uniform(0.2, 0.8, size=(N, 4, 4, 1)).astype(np.float32)
        x[:, 0, 0, 0] = SPACING * np.arange(N) + SPACING / 2
        return x


EARLY = [("pgd", {"num_steps": 10, "step_size": 0.01}),
         ("pgd", {"num_steps": 6, "step_size": 0.01, "restarts": 3}),
         ("di2_fgsm", {"num_steps": 10, "step_size": 0.01, "diversity_prob": 0.0}),
         ("apgd_ce", {"num_steps": 10})]


@pytest.mark.parametrize("name,options", EARLY)
def test_early_exit_keeps_the_first_adversarial_and_never_queries_a_finished_sample(
        name, options):
    rec = Recorder()
    x = rec.images()
    y = np.argmax(rec.model(x).numpy(), axis=-1)
    rec.calls.clear()
    res = attacks.get(name).run(rec.model, x, y, eps=0.04, seed=0, early_exit=True,
                                **options)
    exited = res.details["exited"]
    assert 0 < exited.sum() < N  # some samples leave early, some never do
    for i in range(N):
        seen = [(k, xs[ids == i][0], lg[ids == i][0]) for k, (ids, xs, lg)
                in enumerate(rec.calls) if np.any(ids == i)]
        wrong = [(k, xi) for k, xi, lg in seen if np.argmax(lg) != y[i]]
        if exited[i]:
            k_first, x_first = wrong[0]
            np.testing.assert_array_equal(res.x_adv[i], x_first)  # the first success
            assert max(k for k, _, _ in seen) == k_first  # never called again
        else:
            assert not wrong  # no adversarial was seen and passed over
    # Each gradient evaluation of a sample is one model call holding it.
    counts = [sum(np.any(ids == i) for ids, _, _ in rec.calls) for i in range(N)]
    forward_checks = options.get("restarts", 1) > 1  # a forward pass after each run
    assert np.all(res.details["gradients"] <= counts)
    if not forward_checks:
        np.testing.assert_array_equal(res.details["gradients"], counts)
    rec.calls.clear()
    full = attacks.get(name).run(rec.model, x, y, eps=0.04, seed=0, early_exit=False,
                                 **options)
    assert np.all(full.details["gradients"] >= res.details["gradients"])
    assert full.details["gradients"].sum() > res.details["gradients"].sum()


def tiny_ode_net():
    """An ODE block with per-sample steps at a loose tolerance (so the samples take
    different steps) between 8x8 images and 3 logits."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.ODEBlock(layers.ODEFunc(1), gradient="backprop", per_sample_steps=True,
                        rtol=1e-2, atol=1e-2)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))


def row_by_row(model):
    """``model`` run on each row alone (``tf.map_fn``): every row is computed at batch
    size 1, so its logits and gradient are the same bits in any batch, by construction.

    Without it a row's bits depend on the batch size: convolution kernels pick their
    blocking by shape. The tiny ODE-Net's loss gradient is so ill-conditioned in places
    (it changes severalfold under input changes of 1e-6, at the same solver steps) that
    that rounding alone moved whole sign steps of DI2-FGSM on one CPU and not on
    another: a property of that model and CPU, not of the attack's bookkeeping, which
    is what the test below checks.
    """
    # One trace for every batch size (the attacks use a graph function as it is).
    @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(model.input_shape[1:]),
                                                tf.float32)])
    def logits(x):
        return tf.map_fn(lambda row: model(row[None], training=False)[0], x)
    return logits


@pytest.mark.parametrize("name,options", [
    ("pgd", {"num_steps": 4, "step_size": 0.05, "restarts": 2}),
    ("di2_fgsm", {"num_steps": 4, "step_size": 0.05}),
    ("apgd_ce", {"num_steps": 4}),
])
def test_per_sample_results_do_not_depend_on_the_batch_or_its_shrinking(name, options):
    """The attacks' bookkeeping: the batch, each sample alone, a permuted subset, and
    without early exit (no shrinking) all give each sample the same trajectory, on an
    ODE-Net whose samples take different solver steps."""
    model = row_by_row(tiny_ode_net())
    x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, 1)).astype(np.float32)
    y = attacks.predict(model, x, xla=False)
    ids = np.arange(100, 106)
    spec = attacks.get(name)

    def run(rows, early_exit=True):
        return spec.run(model, x[rows], y[rows], eps=0.1, seed=3, ids=ids[rows],
                        early_exit=early_exit, **options)

    batch = run(np.arange(6))
    fooled = attacks.predict(model, batch.x_adv, xla=False) != y
    assert 0 < fooled.sum() < 6 or batch.details["exited"].any()
    for i in range(6):
        np.testing.assert_allclose(run(np.array([i])).x_adv[0], batch.x_adv[i], atol=1e-5)
    order = np.array([4, 1, 3])
    np.testing.assert_allclose(run(order).x_adv, batch.x_adv[order], atol=1e-5)
    # Without early exit the batch never shrinks: the samples no iterate fooled took the
    # same steps.
    whole = run(np.arange(6), early_exit=False)
    kept = ~batch.details["exited"]
    np.testing.assert_allclose(whole.x_adv[kept], batch.x_adv[kept], atol=1e-5)


def labelled_by(model, n=12, seed=0):
    """Images the model classifies as their labels, except two."""
    x = np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)
    y = attacks.predict(model, x[..., None].astype(np.float32) / 255.0)
    y[:2] = (y[:2] + 1) % 10
    return x[..., None], y


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """A saved tiny CNN and generated data it mostly classifies right."""
    model = tiny_cnn()
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    images, labels = labelled_by(model)
    monkeypatch.setattr(data, "load_arrays",
                        lambda *a, **k: (images, labels.astype(np.uint8)))
    return {"path": path, "tmp": tmp_path, "labels": labels}


SWEEP = dict(attacks=("fgsm", "pgd", "di2_fgsm", "apgd_ce", "boundary"),
             eps=(0.02, 0.05, 0.1), num_examples=12, batch_size=4,
             attack_options={"pgd": {"num_steps": 5}, "di2_fgsm": {"num_steps": 5},
                             "apgd_ce": {"num_steps": 5}, "boundary": {"max_queries": 30}})


def test_fast_schedule_is_monotone_and_never_more_robust_than_exhaustive(tiny_run):
    reports = {s: evaluation.evaluate(EvalConfig(
        model_path=tiny_run["path"], schedule=s, output_dir=str(tiny_run["tmp"] / s),
        **SWEEP), log=lambda *_: None, verbose=0) for s in evaluation.SCHEDULES}
    fast, full = (reports[s]["models"]["tiny"] for s in ("fast", "exhaustive"))
    assert reports["fast"]["schedule"] == "fast"
    assert "first adversarial" in reports["fast"]["conventions"]
    assert "last iterate" in reports["exhaustive"]["conventions"]
    keys = ["0.02", "0.05", "0.1"]
    for name, attack in fast["attacks"].items():
        masks = [outcomes.decode(attack["cells"][k]["robust"]) for k in keys]
        for small, large in zip(masks, masks[1:]):
            assert not np.any(large & ~small)  # robust at a larger eps: robust below too
        for k in keys:
            assert (attack["cells"][k]["robust_accuracy"]
                    <= full["attacks"][name]["cells"][k]["robust_accuracy"])
        assert attack["throughput"]["examples_x_eps_per_second"] > 0
        assert attack["throughput"]["attacked"] <= full["attacks"][name]["throughput"][
            "attacked"]
    for k in keys:
        assert fast["worst_case"][k]["robust_accuracy"] <= full["worst_case"][k][
            "robust_accuracy"]
    # Only what is still robust is attacked: never the two misclassified examples, and at
    # the larger eps only the survivors.
    assert fast["attacks"]["pgd"]["cells"]["0.02"]["attacked"] == 10
    assert (fast["attacks"]["pgd"]["cells"]["0.1"]["attacked"]
            == round(12 * fast["attacks"]["pgd"]["cells"]["0.05"]["robust_accuracy"]))
    assert fast["attacks"]["pgd"]["cells"]["0.1"]["carried"] == (
        10 - fast["attacks"]["pgd"]["cells"]["0.1"]["attacked"])
    boundary = fast["attacks"]["boundary"]
    assert boundary["meta"]["survivors_of"] == ["fgsm", "pgd", "di2_fgsm", "apgd_ce"]
    before = np.logical_and.reduce([outcomes.decode(fast["attacks"][n]["cells"]["0.02"][
        "robust"]) for n in boundary["meta"]["survivors_of"]])
    assert boundary["summary"]["attacked"] == before.sum()
    assert "left robust at eps 0.02" in boundary["summary"]["over"]
    md = (tiny_run["tmp"] / "fast" / "report.md").read_text()
    assert "Schedule fast: gradient attacks keep each example's first adversarial" in md
    assert "boundary | decision-based (on the survivors of the attacks above)" in md
    assert "examples x eps per second: fgsm " in md


def run_tool(module, argv):
    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS([module.__name__] + argv)
    module.main([module.__name__])


def test_shards_merge_to_the_unsharded_report(tiny_run):
    from tools import evaluate as evaluate_app
    from tools import merge_shards

    common = [f"--model_path={tiny_run['path']}", "--attacks=fgsm,pgd,di2_fgsm,apgd_ce",
              "--eps=0.002,0.01", "--num_examples=11", "--batch_size=4",
              "--attack_option=pgd.num_steps=5", "--attack_option=di2_fgsm.num_steps=5",
              "--attack_option=apgd_ce.num_steps=5"]
    whole_dir, sharded_dir = tiny_run["tmp"] / "whole", tiny_run["tmp"] / "sharded"
    run_tool(evaluate_app, common + [f"--output_dir={whole_dir}"])
    for i in (2, 0, 1):  # any order: each shard is its own job
        run_tool(evaluate_app, common + [f"--output_dir={sharded_dir}", f"--shard={i}/3"])
    run_tool(merge_shards, [f"--output_dir={sharded_dir}"])
    whole = json.loads((whole_dir / "report.json").read_text())
    merged = json.loads((sharded_dir / "report.json").read_text())
    assert merged["num_examples"] == whole["num_examples"] == 11
    assert [s["stop"] - s["start"] for s in merged["shards"]] == [3, 4, 4]
    a, b = whole["models"]["tiny"], merged["models"]["tiny"]
    assert a["clean_correct"] == b["clean_correct"]
    fooled = 0
    for name, attack in a["attacks"].items():
        for k, cell in attack["cells"].items():
            other = b["attacks"][name]["cells"][k]
            assert cell["robust"] == other["robust"], (name, k)
            numbers = {f for f in cell if f not in ("seconds", "robust", "ci95")}
            assert set(other) - {"seconds", "robust", "ci95"} == numbers
            assert {f: cell[f] for f in numbers} == pytest.approx(
                {f: other[f] for f in numbers}), (name, k)
            assert cell["ci95"] == pytest.approx(other["ci95"]), (name, k)
            fooled += cell["num_fooled"]
    assert fooled > 0
    assert a["worst_case"] == b["worst_case"]
    assert [(f["check"], f["passed"]) for f in a["checks"]] == [
        (f["check"], f["passed"]) for f in b["checks"]]
    assert (sharded_dir / "report.md").read_text().startswith("# Robustness report")


def test_bad_shard_input_is_one_line(tiny_run):
    with pytest.raises(TfnodeError, match=r"^shard_index must be an integer in \[0, 1\]"):
        evaluation.evaluate(EvalConfig(model_path=tiny_run["path"], num_shards=2,
                                       shard_index=2), log=lambda *_: None, verbose=0)
    with pytest.raises(TfnodeError, match="^schedule must be one of"):
        evaluation.resolve_options(EvalConfig(model_path="x", schedule="quick"))
    with pytest.raises(TfnodeError, match="does not combine with tolerance_grid"):
        evaluation.resolve_options(EvalConfig(model_path="x", num_shards=2,
                                              tolerance_grid=(1e-3,)))
    out = tiny_run["tmp"] / "half"
    evaluation.evaluate(EvalConfig(model_path=tiny_run["path"], attacks=("fgsm",), eps=(0.1,),
                                   num_examples=4, num_shards=2, shard_index=1,
                                   output_dir=str(out)), log=lambda *_: None, verbose=0)
    with pytest.raises(TfnodeError, match=r"needs each of 0\.\.1 exactly once"):
        shards.merge(shards.find(str(out)), str(out))
    with pytest.raises(TfnodeError, match="has no shards"):
        shards.find(str(tiny_run["tmp"] / "nothing"))


def test_under_tf_config_worker_i_takes_shard_i_and_the_chief_merges(tiny_run, monkeypatch):
    from tools import evaluate as evaluate_app

    common = [f"--model_path={tiny_run['path']}", "--attacks=fgsm,pgd", "--eps=0.01",
              "--num_examples=11", "--batch_size=4", "--attack_option=pgd.num_steps=3"]
    whole_dir, sharded_dir = tiny_run["tmp"] / "whole", tiny_run["tmp"] / "sharded"
    run_tool(evaluate_app, common + [f"--output_dir={whole_dir}"])
    hosts = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}
    for task in ({"type": "worker", "index": 1}, {"type": "worker", "index": 0},
                 {"type": "chief", "index": 0}):  # the chief last: it merges at once
        monkeypatch.setenv("TF_CONFIG", json.dumps({**hosts, "task": task}))
        run_tool(evaluate_app, common + [f"--output_dir={sharded_dir}"])
        assert (sharded_dir / "report.json").exists() == (task["type"] == "chief")
    assert sorted(os.listdir(sharded_dir / "shards")) == ["0-of-3", "1-of-3", "2-of-3"]
    whole = json.loads((whole_dir / "report.json").read_text())
    merged = json.loads((sharded_dir / "report.json").read_text())
    assert merged["num_examples"] == 11 and len(merged["shards"]) == 3
    assert merged["models"]["tiny"]["worst_case"] == whole["models"]["tiny"]["worst_case"]


def test_the_chief_waits_for_a_running_shard_and_leaves_a_missing_one_to_merge_shards(
        tiny_run):
    def config(i, out):
        return EvalConfig(model_path=tiny_run["path"], attacks=("fgsm",), eps=(0.1,),
                          num_examples=6, batch_size=4, num_shards=2, shard_index=i,
                          output_dir=str(out))

    def run(i, out):
        evaluation.evaluate(config(i, out), log=lambda *_: None, verbose=0)

    out = tiny_run["tmp"] / "shared"
    run(0, out)
    os.makedirs(shards.shard_dir(str(out), 1, 2))  # shard 1's job has started
    lines, naps = [], []
    merged = shards.wait_and_merge(str(out), 2, log=lines.append,
                                   sleep=lambda s: naps.append(s) or run(1, out))
    assert merged["num_examples"] == 6 and len(naps) == 1 and (out / "report.json").exists()
    assert "waiting for shard(s) [1] of 2" in lines[0] and "merged 2 shards" in lines[-1]
    # A folder the other job does not see: no wait, the merge is left to tools.merge_shards.
    alone = tiny_run["tmp"] / "alone"
    lines = []
    assert evaluation.evaluate(
        dataclasses.replace(config(0, alone), merge_shards=True),
        log=lines.append, verbose=0)["shard"]["index"] == 0
    assert "shard(s) [1] have no folder" in lines[-1]
    assert f"tools.merge_shards --output_dir={alone}" in lines[-1]
    assert not (alone / "report.json").exists()
    # A started shard that stopped changing (its job died): no wait either.
    stalled = shards.shard_dir(str(alone), 1, 2)
    os.makedirs(stalled)
    os.utime(stalled, (0, 0))
    lines = []
    assert shards.wait_and_merge(str(alone), 2, log=lines.append, stall_seconds=60,
                                 sleep=pytest.fail) is None
    assert "shard(s) [1] have not changed for 60 s" in lines[-1]


def test_shards_of_other_weights_do_not_merge(tiny_run):
    out = tiny_run["tmp"] / "two"
    for i in (0, 1):
        evaluation.evaluate(EvalConfig(model_path=tiny_run["path"], attacks=("fgsm",),
                                       eps=(0.1,), num_examples=4, num_shards=2,
                                       shard_index=i, output_dir=str(out)),
                            log=lambda *_: None, verbose=0)
    folders = shards.find(str(out))
    shards.merge(folders, str(out))  # the same model: merges
    path = os.path.join(folders[1], "report.json")
    with open(path) as f:
        report = json.load(f)
    assert report["models"]["tiny"]["info"]["fingerprint"]
    report["models"]["tiny"]["info"]["fingerprint"] = "0" * 12  # the file replaced
    with open(path, "w") as f:
        json.dump(report, f)
    with pytest.raises(TfnodeError, match="^model 'tiny' has other weights in some shards"):
        shards.merge(folders, str(out))

def _target(model, x, y, fast):
    return schedule.Target(model, x, y, np.arange(len(y)), np.ones(len(y), bool), len(y), 0,
                          fast, lambda *_: None, 0)


def test_an_exit_the_evaluation_does_not_confirm_gets_the_whole_attack(monkeypatch):
    """The first adversarial lies just past the boundary; when the evaluation's forward
    pass decides otherwise, the example is attacked again without early exit."""
    rec = Recorder()
    x = rec.images()
    y = np.argmax(rec.model(x).numpy(), axis=-1)
    spec = attacks.get("pgd")
    options = spec.options({"num_steps": 10, "step_size": 0.01})
    clean = attacks.forward_fn(rec.model)
    # An evaluation forward pass that undoes small perturbations (decisively, unlike real
    # rounding): it confirms no adversarial within eps 0.04 of any image.
    x0 = tf.constant(x)

    def forward(m):
        def undo(v):  # per row, found by the id in its pixel 0
            ids = tf.cast(tf.round((v[:, 0, 0, 0] - SPACING / 2) / SPACING), tf.int32)
            orig = tf.gather(x0, ids)
            near = tf.reduce_max(tf.abs(v - orig), axis=[1, 2, 3]) <= 0.0401
            return clean(tf.where(near[:, None, None, None], orig, v))
        return undo
    monkeypatch.setattr(attacks._utils, "forward_fn", forward)
    cells = {}
    for fast in (True, False):
        job = plan.Job("pgd", spec, options, rec.model, {"kind": spec.kind}, [0.04])
        cells[fast] = schedule.run_job(_target(rec.model, x, y, fast), job, {})["cells"]["0.04"]
    assert cells[True]["exit_not_confirmed"] > 0
    assert cells[True]["robust"] == cells[False]["robust"]
    assert cells[True]["robust_accuracy"] == 1.0


def test_early_exit_only_on_the_evaluated_model():
    model, other = tiny_cnn(), tiny_cnn(seed=1)
    target = _target(model, np.zeros((2, 28, 28, 1), np.float32), np.zeros(2, int), True)
    spec = attacks.get("pgd")
    assert schedule.early_exit(target, plan.Job("pgd", spec, {}, model, {}, [0.1]))
    # A solver surrogate or a transfer source: another model than the one evaluated.
    assert not schedule.early_exit(target, plan.Job("x", spec, {}, other, {}, [0.1]))
    assert not schedule.early_exit(_target(model, target.x, target.y, False),
                                   plan.Job("pgd", spec, {}, model, {}, [0.1]))
