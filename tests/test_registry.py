"""Every registered attack, driven from the registry: a new attack is covered unedited.

Budget and clip range, determinism under a seed, query budgets, the result type, and
each option's one-line error naming the option.
"""

import numpy as np
import pytest

from tfnode import attacks
from tfnode.attacks import registry
from tfnode.errors import TfnodeError

from tests.test_attacks import images, mlp_model, own_labels

NAMES = attacks.available()
# A value each rule rejects.
BAD = {registry.COUNT: 0, registry.UNIT: 0.0, registry.FRACTION: 1.0,
       registry.PROBABILITY: 1.5, registry.NONNEGATIVE: -1.0, registry.ABOVE_ONE: 1.0,
       registry.BOOL: "yes"}


def tiny_options(spec, cap=3, dataset="mnist"):
    """The attack's options with every count (steps, queries, restarts: any option whose
    rule is COUNT) cut to ``cap``: a smoke-sized run of any registered attack."""
    if spec.needs_source:  # transfer: a transferable attack and its options
        inner = attacks.get("pgd")
        return {"attack": "pgd", **tiny_options(inner, cap, dataset)}
    opts = spec.options(dataset=dataset)
    return spec.options({k: min(v, cap) for k, v in opts.items()
                         if spec.rules.get(k) is registry.COUNT}, dataset=dataset)


def fast_options(spec):
    return tiny_options(spec, cap=30)


def run(name, model, x, y, *, eps=0.1, seed=0):
    spec = attacks.get(name)
    return spec.run(model, x, y, eps=eps, seed=seed, batch_size=5, **fast_options(spec))


@pytest.fixture(scope="module")
def setup():
    model = mlp_model(classes=10)  # as MNIST's and CIFAR-10's: APGD-T needs more than 9
    x = images(n=10, edges=True)
    return model, x, own_labels(model, x)


def test_the_registry_holds_every_attack_family():
    assert {"fgsm", "pgd", "di2_fgsm", "apgd_ce", "apgd_dlr", "square", "boundary",
            "transfer"} <= set(NAMES)
    for name in NAMES:
        spec = attacks.get(name)
        assert spec.kind in registry.KINDS and spec.summary and spec.reference
        spec.options(dataset="mnist")  # the defaults pass their own rules
    with pytest.raises(TfnodeError, match="unknown attack 'cw'"):
        attacks.get("cw")


@pytest.mark.parametrize("name", NAMES)
def test_every_attack_stays_in_budget_and_clip_range(setup, name):
    model, x, y = setup
    spec = attacks.get(name)
    res = run(name, model, x, y, eps=0.1)
    assert isinstance(res, attacks.AttackResult)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == np.float32
    assert res.x_adv.min() >= 0.0 and res.x_adv.max() <= 1.0
    if not spec.minimizes_distance:
        assert np.max(np.abs(res.x_adv - x)) <= 0.1 + 1e-6
    if res.queries is not None:
        budget = fast_options(spec)["max_queries"]
        assert 1 <= res.queries.min() and res.queries.max() <= budget
    if res.is_adv is not None:  # what the attack saw is what the model says
        np.testing.assert_array_equal(
            res.is_adv, attacks.predict(model, res.x_adv, xla=False) != y)


@pytest.mark.parametrize("name", NAMES)
def test_every_attack_is_deterministic_under_its_seed(setup, name):
    model, x, y = setup
    # (That another seed changes the result is each attack's own test: a short run can
    # end on the same corners of the eps-box from any start.)
    a = run(name, model, x, y, seed=3).x_adv
    np.testing.assert_array_equal(a, run(name, model, x, y, seed=3).x_adv)


@pytest.mark.parametrize("name", NAMES)
def test_every_bad_option_is_a_one_line_error_naming_it(name):
    spec = attacks.get(name)
    with pytest.raises(TfnodeError, match=rf"attack option {name}\.no_such_option"):
        spec.options({"no_such_option": 1})
    for option, rule in spec.rules.items():
        bad = BAD.get(rule, "not-an-allowed-value")
        with pytest.raises(TfnodeError, match=rf"attack option {name}\.{option} must be") as err:
            spec.options({option: bad})
        assert "\n" not in str(err.value)
