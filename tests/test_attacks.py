"""Attacks against truths: a linear model's optimal FGSM, CleverHans' PGD, budgets, queries."""

import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from tfnode import attacks
from tfnode.errors import TfnodeError

SHAPE = (6, 6, 1)


def linear_model(num_classes=2, seed=0):
    """logits = flatten(x) @ W + b, as a plain tf.function (any logits callable works)."""
    rng = np.random.default_rng(seed)
    w = tf.constant(rng.normal(size=(int(np.prod(SHAPE)), num_classes)), tf.float32)
    b = tf.constant(rng.normal(size=(num_classes,)) * 0.1, tf.float32)
    # Centered inputs, so that the classes are balanced over images in [0, 1].
    fn = tf.function(lambda x: tf.reshape(x - 0.5, (tf.shape(x)[0], -1)) @ w + b)
    return fn, w.numpy(), b.numpy()


def mlp_model(seed=0, shape=SHAPE, classes=3):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape), keras.layers.Conv2D(4, 3, activation="tanh"),
                             keras.layers.Flatten(), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(classes)])


def images(n=16, seed=0, shape=SHAPE, edges=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, size=(n,) + shape)
    if edges:  # pixels at the ends of [0, 1], so that the clip is active
        x = np.where(rng.random(x.shape) < 0.5, rng.integers(0, 2, x.shape), x)
    return x.astype(np.float32)


def own_labels(model, x):
    return attacks.predict(model, x)


def ce(model, x, y):
    logits = attacks.logits_fn(model)(tf.constant(x))
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits).numpy()


def test_fgsm_on_a_linear_model_is_the_optimal_sign_step():
    fn, w, _ = linear_model()
    x = images()
    y = np.arange(len(x)) % 2
    eps = 0.1
    x_adv = attacks.fgsm(fn, x, y, eps=eps).numpy()
    # CE of 2 logits grows along w_other - w_y: the optimal Linf step is its sign.
    other = 1 - y
    expected = x + eps * np.sign(w[:, other] - w[:, y]).T.reshape(x.shape)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_l2_attacks_have_norm_eps():
    fn, w, _ = linear_model()
    x = np.full((4,) + SHAPE, 0.5, np.float32)  # far from the clip range
    y = np.zeros(len(x), int)
    x_adv = attacks.fgsm(fn, x, y, eps=0.5, norm=2).numpy()
    l2, _ = attacks.distances(x_adv, x)
    np.testing.assert_allclose(l2, 0.5, rtol=1e-4)
    direction = (w[:, 1] - w[:, 0]) / np.linalg.norm(w[:, 1] - w[:, 0])
    np.testing.assert_allclose(x_adv[0].ravel() - 0.5, 0.5 * direction, atol=1e-5)
    # L2 PGD from a random start in the L2 ball stays in it and ends on its surface.
    start = attacks.random_start(x, eps=1.5, norm=2, seed=0).numpy()
    assert np.all(attacks.distances(start, x)[0] <= 1.5 + 1e-5)
    x_pgd = attacks.pgd(fn, x, y, eps=1.5, norm=2, step_size=0.5, num_steps=10).numpy()
    np.testing.assert_allclose(attacks.distances(x_pgd, x)[0], 1.5, rtol=1e-4)


@pytest.mark.parametrize("attack,kwargs", [
    ("fgsm", {}),
    ("pgd", {"step_size": 0.05, "num_steps": 5}),
    ("pgd", {"step_size": 0.3, "num_steps": 3}),  # step > eps is allowed
    ("pgd", {"step_size": 0.05, "num_steps": 3, "restarts": 3}),
    ("di2_fgsm", {"step_size": 0.05, "num_steps": 4, "diversity_prob": 1.0}),
    ("di2_fgsm", {"step_size": 0.05, "num_steps": 4, "decay": 1.0}),
])
def test_every_attack_respects_eps_and_the_clip_range(attack, kwargs):
    model = mlp_model()
    x = images(edges=True)
    y = own_labels(model, x)
    eps = 0.1
    x_adv = np.asarray(getattr(attacks, attack)(model, x, y, eps=eps, **kwargs))
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.max(np.abs(x_adv - x)) <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.max(np.abs(x_adv - x)) > eps / 2  # it did move


def test_pgd_is_cleverhans_pgd_when_cleverhans_can_run_it():
    model = mlp_model()
    x = images()
    y = own_labels(model, x)
    ours = attacks.pgd(model, x, y, eps=0.1, step_size=0.02, num_steps=7, rand_init=False)
    theirs = projected_gradient_descent(attacks.logits_fn(model), tf.constant(x), 0.1, 0.02, 7,
                                        np.inf, clip_min=0.0, clip_max=1.0, y=tf.constant(y),
                                        rand_init=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_pgd_is_at_least_as_strong_as_fgsm():
    model = mlp_model()
    x = images(n=64)
    y = own_labels(model, x)
    for eps in (0.05, 0.2):
        fgsm_loss = ce(model, attacks.fgsm(model, x, y, eps=eps).numpy(), y)
        pgd_adv = attacks.pgd(model, x, y, eps=eps, step_size=eps / 4, num_steps=20).numpy()
        pgd_loss = ce(model, pgd_adv, y)
        # PGD maximizes the loss, so that is what it must do at least as well as FGSM;
        # accuracy follows up to a sample or two near the decision boundary.
        assert pgd_loss.mean() >= fgsm_loss.mean() - 1e-5
        assert np.mean(attacks.predict(model, pgd_adv) == y) <= np.mean(
            attacks.predict(model, attacks.fgsm(model, x, y, eps=eps).numpy()) == y) + 2 / 64


def test_pgd_random_start_is_seeded():
    model = mlp_model()
    x = images()
    y = own_labels(model, x)
    a = attacks.pgd(model, x, y, eps=0.1, num_steps=2, seed=3).numpy()
    b = attacks.pgd(model, x, y, eps=0.1, num_steps=2, seed=3).numpy()
    c = attacks.pgd(model, x, y, eps=0.1, num_steps=2, seed=4).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0


def test_di2_fgsm_without_diversity_is_i_fgsm():
    model = mlp_model()
    x = images()
    y = own_labels(model, x)
    di = attacks.di2_fgsm(model, x, y, eps=0.1, step_size=0.02, num_steps=6,
                          diversity_prob=0.0).numpy()
    ifgsm = attacks.pgd(model, x, y, eps=0.1, step_size=0.02, num_steps=6,
                        rand_init=False).numpy()
    np.testing.assert_allclose(di, ifgsm, atol=1e-6)
    diverse = attacks.di2_fgsm(model, x, y, eps=0.1, step_size=0.02, num_steps=6,
                               diversity_prob=1.0).numpy()
    assert np.max(np.abs(diverse - ifgsm)) > 0.01  # the transform is really applied


def test_input_diversity_resizes_and_pads_back():
    x = tf.constant(images(n=2, shape=(10, 10, 1)) + 1.0)  # no zero pixels of its own
    for i in range(5):
        out = attacks.input_diversity(x, resize_rate=0.7, diversity_prob=1.0,
                                      seed=tf.constant([0, i], tf.int64)).numpy()
        assert out.shape == x.shape
        zero_rows = np.all(out[0, :, :, 0] == 0, axis=1).sum()
        zero_cols = np.all(out[0, :, :, 0] == 0, axis=0).sum()
        assert 1 <= zero_rows <= 3 and zero_rows == zero_cols  # square r x r, r in [7, 10)
        assert set(np.unique(out[out > 0])) <= set(np.unique(x.numpy()))  # nearest resize
    same = attacks.input_diversity(x, resize_rate=0.7, diversity_prob=0.0,
                                   seed=tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(same, x)


def test_project_l2_and_linf():
    x = images()
    far = x + 0.5
    for norm in (np.inf, 2):
        p = attacks.project(far, x, eps=0.3, norm=norm).numpy()
        l2, linf = attacks.distances(p, x)
        assert (linf if norm == np.inf else l2).max() <= 0.3 + 1e-5
        assert p.min() >= 0 and p.max() <= 1


@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: attacks.fgsm(m, x, y, eps=-0.1), "eps must be >= 0"),
    (lambda m, x, y: attacks.fgsm(m, x, y, eps=1.5), "eps must lie in"),
    (lambda m, x, y: attacks.fgsm(m, x, y, eps=0.1, norm=1), "norm must be"),
    (lambda m, x, y: attacks.pgd(m, x, y, eps=0.1, num_steps=0), "num_steps must be"),
    (lambda m, x, y: attacks.pgd(m, x, y, eps=0.1, step_size=2.0), "step_size must lie"),
    (lambda m, x, y: attacks.di2_fgsm(m, x, y, eps=0.1, resize_rate=0.0), "resize_rate"),
    (lambda m, x, y: attacks.boundary_attack(m, x, y, max_queries=0), "max_queries must"),
    (lambda m, x, y: attacks.boundary_attack(m, x, y, source_step=1.5), "source_step must"),
    (lambda m, x, y: attacks.square_attack(m, x, y, eps=0.1, p_init=0.0), "p_init must"),
])
def test_bad_attack_options_are_one_line_errors_naming_the_option(call, match):
    fn, _, _ = linear_model()
    with pytest.raises(TfnodeError, match=match) as err:
        call(fn, images(n=2), np.zeros(2, int))
    assert "\n" not in str(err.value)


def test_project_exact_values():
    x = np.full((2, 2, 2, 1), 0.5, np.float32)
    x[1] = 0.95  # near the top of the clip range
    far = x + np.float32([0.3, -0.02, 0.0, -0.4, 0.1, 0.2, 0.05, 0.0]).reshape(2, 2, 2, 1)
    linf = attacks.project(far, x, eps=0.1).numpy()
    # Linf: each coordinate clipped to [x - eps, x + eps], then to [0, 1].
    expected = np.clip(np.clip(far, x - 0.1, x + 0.1), 0.0, 1.0)
    np.testing.assert_allclose(linf, expected, atol=1e-7)
    assert linf[1].max() == 1.0 and linf[0, 0, 0, 0] == pytest.approx(0.6)
    # L2: a delta longer than eps is scaled onto the ball, a shorter one kept as it is.
    x2 = np.full((2, 2, 2, 1), 0.5, np.float32)
    delta = np.zeros_like(x2)
    delta[0, 0, 0, 0], delta[0, 0, 1, 0] = 0.3, 0.4       # length 0.5 > eps 0.25
    delta[1, 0, 0, 0] = 0.1                               # length 0.1 < eps
    l2 = attacks.project(x2 + delta, x2, eps=0.25, norm=2).numpy()
    np.testing.assert_allclose(l2[0] - x2[0], delta[0] * 0.5, atol=1e-6)
    np.testing.assert_allclose(l2[1], x2[1] + delta[1], atol=1e-7)
    # A point inside both balls and the clip range is its own projection.
    inside = x + 0.05
    np.testing.assert_array_equal(attacks.project(inside, x, eps=0.1).numpy(),
                                  np.clip(inside, 0, 1))


def counting(fn):
    """A logits tf.function that counts, in a variable, how many images it was asked about."""
    rows = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def counted(x):
        rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return fn(x)

    return counted, rows


def test_boundary_attack_counts_queries_and_shrinks_the_distance():
    fn, _, _ = linear_model(num_classes=3)
    model, rows = counting(fn)
    x = images(n=12)
    y = attacks.predict(fn, x)
    y[0] = (y[0] + 1) % 3  # sample 0 is already misclassified: distance 0
    # The relaxed oracle asks the model about exactly the queried rows (the XLA one
    # pads every call to batch_size: the next test).
    res = attacks.boundary_attack(model, x, y, max_queries=300, seed=1,
                                  batch_size=5, xla=False)
    l2 = attacks.distances(res.x_adv, x)[0]
    assert res.queries.max() <= 300 and res.queries.sum() == int(rows.numpy())
    assert res.is_adv[0] and l2[0] == 0 and res.queries[0] == 1
    found = res.is_adv.copy()
    found[0] = False
    assert found.sum() >= 8
    # Only misclassified points are returned as adversarial ...
    assert np.all(attacks.predict(fn, res.x_adv[res.is_adv]) != y[res.is_adv])
    # ... and the walk along the boundary shrinks the distance found by the init.
    assert np.median(l2[found]) < 0.8 * np.median(res.details["initial_l2"][found])
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def tiny_ode_net(seed=0):
    """A Keras ODE-Net with per-sample adaptive steps, small enough for a test."""
    import keras

    from tfnode import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = layers.ODEBlock(layers.ODEFunc(4), gradient="backprop", per_sample_steps=True)(h)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    return keras.Model(inputs, logits)


def test_xla_rows_do_not_depend_on_the_other_rows_at_a_fixed_shape():
    """What the Boundary Attack's XLA oracle relies on: at one compiled shape, a row's
    logits are the same bits whatever the other rows hold or where it sits."""
    model = tiny_ode_net()
    fn = attacks.forward_fn(model)
    x = images(8, seed=3)
    base = fn(tf.constant(x)).numpy()
    other = x.copy()
    other[4:] = images(4, seed=4)
    np.testing.assert_array_equal(fn(tf.constant(other)).numpy()[:4], base[:4])
    perm = np.random.default_rng(0).permutation(8)
    np.testing.assert_array_equal(fn(tf.constant(x[perm])).numpy(), base[perm])


@pytest.mark.parametrize("xla,pad", [(True, "batch"), (True, "bucket"), (False, "bucket")])
def test_boundary_oracle_is_the_computation_predict_confirms_with(xla, pad):
    model = tiny_ode_net()
    x = images(6, seed=5)
    query = attacks.confirm_kwargs({"xla": xla, "pad": pad})
    y = attacks.predict(model, x, batch_size=16, **query)
    res = attacks.boundary_attack(model, x, y, max_queries=40, seed=0, batch_size=16,
                                  xla=xla, pad=pad)
    assert res.is_adv.sum() >= 3
    np.testing.assert_array_equal(
        res.is_adv, attacks.predict(model, res.x_adv, batch_size=16, **query) != y)
    if xla:  # "batch": every query at one shape; "bucket": 6 samples in calls of 8
        assert attacks.forward_fn(model).experimental_get_tracing_count() == 1
        assert query["pad_to_batch"] == (pad == "batch")


def test_boundary_refuses_an_unknown_pad():
    with pytest.raises(TfnodeError, match="pad"):
        attacks.boundary_attack(lambda x: x, images(1), np.zeros(1, int), pad="half")


def test_boundary_attack_reports_samples_it_cannot_break():
    fn = tf.function(lambda x: tf.tile(tf.constant([[5.0, 0.0]]), [tf.shape(x)[0], 1]))
    x = images(n=3)
    res = attacks.boundary_attack(fn, x, np.zeros(3, int), max_queries=20, init_attempts=50)
    assert not res.is_adv.any() and np.all(res.queries == 20)
    np.testing.assert_array_equal(res.x_adv, x)


def test_transfer_runs_the_named_attack_on_the_source():
    source = mlp_model(seed=0)
    x = images(n=32)
    y = own_labels(source, x)
    res = attacks.transfer(source, x, y, eps=0.2, attack="pgd", num_steps=3, seed=2)
    direct = attacks.pgd(source, x, y, eps=0.2, num_steps=3, seed=2)
    np.testing.assert_array_equal(res.x_adv, direct)
    with pytest.raises(TfnodeError, match=r"transfer\.attack must be one of"):
        attacks.get("transfer").options({"attack": "boundary"})


def test_pgd_restarts_keep_the_first_success():
    model = mlp_model()
    x = images(n=32)
    y = own_labels(model, x)
    eps = 0.04
    # Run 0 of the restarts is the single run with the same seed.
    one = attacks.pgd(model, x, y, eps=eps, num_steps=3, step_size=0.02, seed=0).numpy()
    best = attacks.pgd(model, x, y, eps=eps, num_steps=3, step_size=0.02, restarts=4).numpy()
    fooled_one = attacks.predict(model, one) != y
    fooled_best = attacks.predict(model, best) != y
    assert np.all(fooled_best[fooled_one])  # a success of run 0 is kept
    assert fooled_best.sum() >= fooled_one.sum()
    np.testing.assert_array_equal(best[~fooled_best], one[~fooled_best])


def test_square_attack_respects_budget_and_counts_queries():
    fn, _, _ = linear_model(num_classes=3)
    model, rows = counting(fn)
    x = images(n=10, edges=True)
    y = attacks.predict(fn, x)
    res = attacks.square_attack(model, x, y, eps=0.3, max_queries=200, seed=0, batch_size=4)
    assert np.max(np.abs(res.x_adv - x)) <= 0.3 + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.queries.max() <= 200 and res.queries.sum() == int(rows.numpy())
    # Only misclassified points count, and a linear model falls to large eps.
    assert np.all(attacks.predict(fn, res.x_adv[res.is_adv]) != y[res.is_adv])
    assert res.is_adv.mean() >= 0.8
    # It stops querying a sample once it is fooled.
    assert res.queries[res.is_adv].mean() < 200
    # Without budget nothing can be fooled that was right.
    none = attacks.square_attack(fn, x, y, eps=0.0, max_queries=5)
    assert not none.is_adv.any()


def test_logits_fn_traces_per_shape_only_when_asked():
    model = mlp_model()
    relaxed, per_shape = attacks.logits_fn(model), attacks.logits_fn(model, per_shape=True)
    assert relaxed is not per_shape
    assert attacks.logits_fn(model, per_shape=True) is per_shape  # cached per model
    for n in (4, 3, 2):
        x = tf.constant(images(n))
        np.testing.assert_allclose(per_shape(x), model(x), rtol=1e-6, atol=1e-6)
        relaxed(x)
    # Gradient attacks see a batch shape or two and keep each static; for a Keras model,
    # the queries of shrinking subsets and their confirmation share ONE graph traced for
    # an unknown batch size (a graph of a known size would compile an ODE block's steps).
    assert per_shape.experimental_get_tracing_count() == 3
    assert relaxed.experimental_get_tracing_count() == 1
    fn, _, _ = linear_model()
    other = attacks.logits_fn(lambda v: fn(v))  # any other callable: relaxed on the 2nd
    for n in (4, 3, 2):
        other(tf.constant(images(n)))
    assert other.experimental_get_tracing_count() == 2


def recording_model(seen):
    """A 2-class logits callable that never changes its mind and records every query."""
    def record(v):  # runs at every query (numpy_function), not once at tracing
        seen.append(v.copy())
        return np.tile(np.float32([[9.0, 0.0]]), (len(v), 1))

    return tf.function(lambda v: tf.numpy_function(record, [v], tf.float32))


def changed_pixels(seen):
    """Per proposal after the start, how many pixels of sample 0 it changes (the start
    stays the best point: the model is never fooled)."""
    return np.array([np.sum(s[0] != seen[0][0]) for s in seen[1:]])


def test_square_attack_on_mnist_proposes_windows_larger_than_a_pixel():
    """With the MNIST default (AutoAttack's p_init 0.8, fixed schedule), most of 1000
    queries propose a change of more than one pixel; with the ImageNet setting (0.05,
    rescaled schedule) 900 of the 999 changed one."""
    x = images(n=1, shape=(28, 28, 1), edges=True)
    opts = attacks.get("square").options(dataset="mnist")
    assert opts["p_init"] == 0.8 and opts["rescale_schedule"] is False
    for setting, at_least_two in ((opts, lambda c: np.mean(c > 1) > 0.5),
                                  ({"max_queries": 1000, "p_init": 0.05},
                                   lambda c: np.mean(c > 1) < 0.15)):
        seen = []
        res = attacks.square_attack(recording_model(seen), x, np.zeros(1, int), eps=0.1,
                                    **setting)
        assert len(seen) == 1000 and np.all(res.queries == 1000)
        assert at_least_two(changed_pixels(seen)), setting
        assert len(res.details["window_sides"]) == 999


def test_square_attack_never_proposes_a_no_op_on_saturated_pixels():
    x = np.zeros((1, 6, 6, 1), np.float32)  # every pixel at the clip's lower end
    seen = []
    attacks.square_attack(recording_model(seen), x, np.zeros(1, int), eps=0.3,
                          max_queries=40, seed=0)
    # After the start (+-eps stripes), every proposal changes the image.
    assert len(seen) == 40 and np.all(changed_pixels(seen) > 0)


@pytest.mark.parametrize("xla", [False, True])
def test_non_finite_logits_are_refused_not_argmaxed(xla):
    import keras

    # Row 2's logits are NaN, as an ODE solve that did not reach t1 returns under XLA.
    inputs = keras.Input((4,))
    nan_row = keras.layers.Lambda(
        lambda x: x + tf.where(x[:, :1] > 5.0, np.nan, 0.0))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(nan_row))
    x = np.zeros((4, 4), np.float32)
    assert attacks.predict(model, x, batch_size=2, xla=xla).shape == (4,)
    x[2] = 9.0
    with pytest.raises(TfnodeError, match=r"non-finite logits for inputs 2\.\.3 \(an ODE "
                                          r"solve that did not reach t1\?\)"):
        attacks.predict(model, x, batch_size=2, xla=xla)
