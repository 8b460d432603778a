"""tfnode.stats against values computed by hand from each test's definition."""

import math

import numpy as np
import pytest

from tfnode import stats


def _wilson_closed_form(k, n, z=1.959963984540054):
    """Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (10, 10), (17, 100), (2811, 10000)])
def test_wilson_is_the_closed_form(k, n):
    low, high = stats.wilson(k, n)
    want = _wilson_closed_form(k, n)
    assert low == pytest.approx(max(0.0, want[0]), abs=1e-12)
    assert high == pytest.approx(min(1.0, want[1]), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_of_nothing_and_the_stored_proportion():
    assert stats.wilson(0, 0) == (None, None)
    p = stats.proportion(17, 100)
    assert p["k"] == 17 and p["n"] == 100 and p["p"] == 0.17
    assert p["ci95"] == list(stats.wilson(17, 100))


def test_mcnemar_exact_is_the_binomial_on_discordant_pairs():
    # 1 example only A holds, 9 only B: p = 2 P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024.
    a = np.array([1] + [0] * 9 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] + [1] * 9 + [1] * 5 + [0] * 3, bool)
    out = stats.mcnemar(a, b)
    assert (out["a_only"], out["b_only"], out["both"], out["neither"]) == (1, 9, 5, 3)
    assert out["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert out["difference"] == pytest.approx((6 - 14) / 18)
    # Symmetric in the two models; 5 discordant all one way: 2 * 2^-5.
    assert stats.mcnemar(b, a)["p_value"] == pytest.approx(out["p_value"], rel=1e-12)
    five = stats.mcnemar(np.ones(5, bool), np.zeros(5, bool))
    assert five["p_value"] == pytest.approx(2 / 32, rel=1e-12)


def test_mcnemar_without_discordant_pairs_and_bad_shapes():
    same = np.array([1, 0, 1], bool)
    assert stats.mcnemar(same, same)["p_value"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        stats.mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_holm_step_down_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([]) == []
    assert stats.holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])


def test_wilcoxon_all_one_sign_is_two_over_two_to_the_n():
    a = np.array([1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    b = a - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # distinct positive differences
    out = stats.wilcoxon(a, b)
    assert out["n"] == 6 and out["p_value"] == pytest.approx(2 / 64, rel=1e-12)
    assert out["median_difference"] == pytest.approx(0.35)


def test_wilcoxon_drops_unfinished_pairs_and_has_no_p_without_differences():
    a = np.array([1.0, np.inf, 3.0])
    b = np.array([1.0, 2.0, 3.0])
    out = stats.wilcoxon(a, b)
    assert out["n"] == 2 and out["p_value"] is None
    assert stats.wilcoxon([], [])["median_a"] is None


@pytest.mark.parametrize("p, difference, expected", [
    (0.01, 0.2, True), (0.01, -0.2, True),   # below alpha, either sign
    (0.05, 0.2, False),                      # at alpha: not below it
    (0.01, 0.0, False),                      # no difference, whatever the p
    (None, 0.2, False),                      # no test
])
def test_significant_needs_a_p_below_alpha_and_a_difference(p, difference, expected):
    assert stats.significant(p, difference) is expected
    assert stats.no_difference(100) == "no difference measurable at n = 100"
