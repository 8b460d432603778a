"""The benchmark machinery: interleaved timing, and the torchdiffeq twin worker.

The twin tests need the extra ``bench`` (torch, torchdiffeq) and are skipped without it.
"""

import io
import json

import numpy as np
import pytest

from benchmarks import ode_block


def test_interleaved_medians_alternate_and_reverse_the_order():
    calls = []

    def run(name, seconds):
        def fn():
            calls.append(name)
            return seconds.pop(0)
        return fn

    medians = ode_block.interleaved_medians(
        {"a": run("a", [9.0, 1.0, 2.0, 3.0]), "b": run("b", [9.0, 5.0, 7.0, 6.0])}, 3)
    # One warm-up each (not counted), then rounds a b / b a / a b.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert medians == {"a": 2.0, "b": 6.0}


@pytest.fixture(scope="module")
def tiny_odenet():
    import keras

    from tfnode import models

    keras.utils.set_random_seed(0)
    model = models.get_model("node", dataset="mnist", width=8, gradient="backprop")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    y = np.arange(4, dtype=np.int64)
    return model, {**ode_block.keras_weights(model), "x": x, "y": y}


def test_torch_twin_worker_computes_tfnode_function(tiny_odenet):
    pytest.importorskip("torchdiffeq")
    from benchmarks import torch_twin
    from tfnode import models

    model, arrays = tiny_odenet
    worker = torch_twin.Worker(arrays, adjoint=False)
    euler = models.with_solver_options(model, solver="euler", step_size=0.25)
    np.testing.assert_allclose(
        worker.handle({"op": "logits", "euler_step": 0.25})["logits"],
        euler(arrays["x"]).numpy(), atol=1e-4)
    np.testing.assert_allclose(worker.handle({"op": "logits"})["logits"],
                               model(arrays["x"]).numpy(), atol=1e-4)
    assert worker.handle({"op": "nfe"})["nfe"] == int(model.get_layer("ode_block").nfe)
    for what in ("forward", "train", "attack"):
        assert worker.handle({"op": "time", "what": what})["seconds"] > 0
    reply = worker.handle({"op": "pgd", "variant": "torchdiffeq as shipped", "start": 1,
                           "stop": 3, "eps": 0.3, "step_size": 0.01, "num_steps": 2})
    assert 0 <= reply["fooled"] <= 2 and reply["nfe"] > 0 and reply["seconds"] > 0
    with pytest.raises(ValueError, match="unknown op 'nope'; expected info"):
        worker.handle({"op": "nope"})
    with pytest.raises(ValueError, match="unknown variant 'x'; expected one of"):
        worker.handle({"op": "nfe", "variant": "x"})


def test_torch_twin_serve_answers_one_json_line_per_request(tiny_odenet, tmp_path):
    pytest.importorskip("torchdiffeq")
    from benchmarks import torch_twin

    _, arrays = tiny_odenet
    np.savez(tmp_path / "arrays.npz", **arrays)
    out = io.StringIO()
    requests = [{"op": "info"}, {"op": "nfe", "variant": "torchdiffeq"}]
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in requests) + "\n"
                        + json.dumps({"op": "nfe"}) + "\n")  # after the empty line: unread
    torch_twin.serve(str(tmp_path / "arrays.npz"), adjoint=False, stdin=stdin, stdout=out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(replies) == 2
    assert replies[0]["variants"] == ["torchdiffeq", "torchdiffeq as shipped"]
    assert replies[1]["nfe"] > 0


def test_time_pgd_alternates_batches_and_sums_per_implementation(tiny_odenet, monkeypatch):
    from benchmarks import attack
    from tfnode import attacks

    model, arrays = tiny_odenet
    x, y = arrays["x"], arrays["y"]
    x, y = np.concatenate([x, x, x[:2]]), np.concatenate([y, y, y[:2]])  # batches 4, 4, 2
    calls, real_pgd = [], attacks.pgd

    def pgd(*args, **kwargs):
        if kwargs["num_steps"] == 2:  # not the warm-up
            calls.append("tfnode")
        return real_pgd(*args, **kwargs)

    def twin(op, *, variant, start, stop, num_steps, **request):
        assert op == "pgd" and request == {"eps": 0.3, "step_size": 0.01}
        if num_steps == 1:  # warm-up
            return {}
        calls.append((variant, start, stop))
        return {"seconds": 1.5, "fooled": 1, "nfe": 10.0 * (start + 1)}

    monkeypatch.setattr(attacks, "pgd", pgd)
    out = attack.time_pgd(model, x, y, 4, twin=twin, twin_variants=("a", "b"), eps=0.3,
                          step_size=0.01, num_steps=2, rand_init=True)
    assert calls == ["tfnode", ("a", 0, 4), ("b", 0, 4),
                     ("b", 4, 8), ("a", 4, 8), "tfnode",
                     "tfnode", ("a", 8, 12), ("b", 8, 12)]
    assert out["a"] == (4.5, 3, pytest.approx((10 + 50 + 90) / 3))
    seconds, fooled, nfe = out["tfnode"]
    assert seconds > 0 and 0 <= fooled <= 10 and nfe >= 2  # dopri5: at least 2 evaluations


def test_matched_tolerance_finds_the_loosest_that_meets_the_target():
    from benchmarks import solvers as bench

    calls = []

    def error_at(tol):  # errors shrink with the tolerance
        calls.append(tol)
        return 3.0 * tol

    # Too inaccurate at the start: walk tighter until 3 tol <= 1.6e-3, i.e. tol 5e-4.
    assert bench.matched_tolerance(error_at, 1.6e-3, 1e-3) == (5e-4, pytest.approx(1.5e-3))
    assert calls == [1e-3, 5e-4]
    # Accurate enough at the start: walk looser while it still meets the target.
    assert bench.matched_tolerance(error_at, 7e-3, 1e-3) == (2e-3, pytest.approx(6e-3))
    # Nothing on the grid meets it.
    assert bench.matched_tolerance(error_at, 1e-9, 1e-3) == (None, None)


# Slow (--run-slow): it runs the solver benchmark itself; the suite's time budget is 25 min.
@pytest.mark.slow
def test_solver_benchmark_rows_are_consistent():
    import keras

    from benchmarks import solvers as bench
    from tfnode import models

    keras.utils.set_random_seed(0)
    model = models.get_model("node", dataset="mnist", width=4)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    y = np.arange(4) % 10
    rows, target = bench.measure(model, x, y, rtol=1e-3, reference_tol=1e-6, repeats=1,
                                 solvers_=["bosh3", "dopri5"])
    by_name = {r["variant"]: r for r in rows}
    assert rows[0]["variant"] == "dopri5 (tfnode) @ 0.001"  # the base of every ratio
    assert rows[0]["error"] == pytest.approx(target, rel=1e-3)
    assert "accepted_steps" in rows[0] and "accepted_steps" not in by_name[
        "dopri5 (TFP) @ 0.001"]
    for r in rows:
        assert r["forward_s"] > 0 and r["train_s"] > 0 and r["nfe"] >= 2
        if "(matched)" in r["variant"]:
            assert r["error"] <= target * 1.01  # (XLA vs TF kernels: float rounding)


def test_eval_sweep_floor_prices_the_worst_case_survivors_at_the_exhaustive_rates():
    from benchmarks.eval_sweep import compare, floor

    def cell(acc, seconds, attacked=10):
        return {"robust_accuracy": acc, "seconds": seconds, "attacked": attacked}

    meta = {"pgd": {"attack": "pgd"}, "boundary": {"attack": "boundary"}}
    exhaustive = {"attacks": {
        "pgd": {"meta": meta["pgd"], "cells": {"0.1": cell(0.6, 20.0), "0.2": cell(0.2, 20.0)}},
        "boundary": {"meta": meta["boundary"],
                     "cells": {"0.1": cell(0.9, 50.0), "0.2": cell(0.8, 50.0)}}},
        "worst_case": {"0.1": {"robust_accuracy": 0.5}, "0.2": {"robust_accuracy": 0.1}}}
    fast = {"attacks": {
        "pgd": {"meta": meta["pgd"], "cells": {"0.1": cell(0.6, 5.0), "0.2": cell(0.1, 2.0)}},
        "boundary": {"meta": meta["boundary"],
                     "cells": {"0.1": cell(0.4, 30.0, 6), "0.2": cell(0.1, 30.0, 6)}}},
        "worst_case": {"0.1": {"robust_accuracy": 0.4}, "0.2": {"robust_accuracy": 0.1}}}
    f = floor(exhaustive, fast, 10)
    # PGD: 4 robust of 10 at 0.1 and 1 at 0.2, at 2 s per example; Boundary runs once:
    # the 4 robust at the smallest eps, at 5 s per example.
    assert f["attacks"]["pgd"] == pytest.approx(4 * 2.0 + 1 * 2.0)
    assert f["attacks"]["boundary"] == pytest.approx(4 * 5.0)
    assert f["seconds"] == pytest.approx(30.0)
    result = compare(exhaustive, fast)
    assert result["violations"] == []
    fast["worst_case"]["0.2"]["robust_accuracy"] = 0.3
    assert compare(exhaustive, fast)["violations"] == [
        "worst case eps 0.2: fast 0.3000 > exhaustive 0.1000"]


def test_ibp_bounds_equal_arts_independent_interval_layers():
    pytest.importorskip("art")
    from benchmarks import ibp_twin

    for name in ibp_twin.CASES:
        for row in ibp_twin.compare(name, eps_values=(0.0, 0.01), n=2):
            # Equal up to float32 summation order, relative to the bounds' scale.
            assert max(row["max_abs_diff_lo"], row["max_abs_diff_hi"]) <= 1e-5 * row["scale"]


def test_every_recipe_variant_takes_a_training_step():
    """benchmarks.recipes times what it builds: each variant, on a tiny ODE-Net, trains."""
    import numpy as np

    from benchmarks import recipes

    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    y = np.arange(4)
    for name, defense, options, regularizer in recipes.VARIANTS:
        net = recipes.trainer("node", {"solver": "rk4", "step_size": 0.5}, defense, options,
                              regularizer, width=4)
        history = net.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), name
