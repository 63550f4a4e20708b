"""The small statistics of benchmarks/ch7_stats.py (chapter 7's paired tests) against exact values."""

import math

import pytest

from benchmarks import ch7_stats


def test_sign_test_is_the_exact_binomial():
    # 10 of 12 positive: p = 2 * P(X <= 2), X ~ Bin(12, 1/2)
    r = ch7_stats.sign_test([1.0] * 10 + [-1.0] * 2)
    assert (r["positive"], r["negative"]) == (10, 2)
    assert r["p_two_sided"] == pytest.approx(round(2 * (1 + 12 + 66) / 2**12, 5))
    assert ch7_stats.sign_test([1.0, -1.0])["p_two_sided"] == 1.0  # balanced: no evidence
    assert ch7_stats.sign_test([0.0, 0.0])["p_two_sided"] == 1.0  # zeros are dropped
    assert ch7_stats.sign_test([1.0] * 12)["p_two_sided"] == pytest.approx(2 / 2**12, abs=1e-5)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    d = [math.sin(k) for k in range(40)]
    lo, hi = ch7_stats.boot_ci(d)
    mean = sum(d) / len(d)
    assert lo < mean < hi
    lo4, hi4 = ch7_stats.boot_ci(d * 4)
    assert hi4 - lo4 < hi - lo
    assert ch7_stats.boot_ci([2.0] * 5) == [2.0, 2.0]


def test_too_few_draws_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        ch7_stats.main(["--lead-draws", "1"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--lead-draws must be at least 2" in err
