"""Table-inversion Poisson draws have the Poisson law of each 8-bit rate."""

import numpy as np
import pytest
from scipy import stats

from data_pipelines.poisson import poisson_counts


@pytest.mark.parametrize("vals", [1, 4, 64, 256])
def test_counts_follow_the_poisson_law(vals):
    levels = np.repeat(np.array([0, 1, 37, 128, 200, 255], np.uint8), 20000).reshape(-1, 100)
    counts = poisson_counts(levels, vals, np.random.default_rng(vals))
    assert counts.shape == levels.shape
    for level in (0, 1, 37, 128, 200, 255):
        draws = counts[levels == level]
        rate = level / 255 * vals
        if rate == 0:
            assert (draws == 0).all()
            continue
        # Chi-square against the pmf over bins holding >= 5 expected draws each.
        ks = np.arange(draws.max() + 2)
        expected = stats.poisson.pmf(ks, rate) * draws.size
        observed = np.bincount(draws, minlength=ks.size)[: ks.size].astype(float)
        keep = expected >= 5
        exp_kept = np.append(expected[keep], draws.size - expected[keep].sum())
        obs_kept = np.append(observed[keep], draws.size - observed[keep].sum())
        if exp_kept[-1] < 1:  # fold a negligible remainder into the largest bin
            obs_kept[np.argmax(exp_kept[:-1])] += obs_kept[-1]
            exp_kept[np.argmax(exp_kept[:-1])] += exp_kept[-1]
            exp_kept, obs_kept = exp_kept[:-1], obs_kept[:-1]
        p = stats.chisquare(obs_kept, exp_kept).pvalue
        assert p > 1e-4, (vals, level, p)
        assert abs(draws.mean() - rate) < 5 * np.sqrt(rate / draws.size)


def test_needs_uint8_levels():
    with pytest.raises(ValueError, match="uint8"):
        poisson_counts(np.zeros(4, np.float32), 4, np.random.default_rng(0))
