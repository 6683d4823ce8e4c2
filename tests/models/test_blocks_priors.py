"""Presence and count priors of the glimpse models: SPAIR's count prior is the geometric prior over
the number of objects conditioned cell by cell; relaxed samples lie in (0, 1); straight-through
rounding is hard forward and soft backward; the Bernoulli KL is the closed form."""

import math

import pytest
import torch

from objdisc.models.blocks.priors import (
    CountPrior,
    bernoulli_kl,
    normal,
    presence,
    straight_through,
)


def geometric(p: float, n: int) -> torch.Tensor:
    prior = torch.tensor([(1 - p) * p**k for k in range(n + 1)], dtype=torch.float64)
    return prior / prior.sum()


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_count_prior_first_cell_is_expected_count_over_cells(p):
    n = 6
    prior = CountPrior(2, n, p, torch.zeros(1, dtype=torch.float64))
    expected = (geometric(p, n) * torch.arange(n + 1)).sum() / n
    torch.testing.assert_close(prior.probs(0), torch.full((2, 1), float(expected), dtype=torch.float64))


def test_count_prior_conditions_on_what_it_has_seen():
    n, p = 4, 0.5
    like = torch.zeros(1, dtype=torch.float64)
    prior = CountPrior(1, n, p, like)
    for i in range(n - 1):  # no object in the first n − 1 cells
        prior.update(torch.zeros(1, 1, dtype=torch.float64), i)
    # then K ∈ {0, 1}, and K = 1 put its object in the last of n cells with chance 1/n:
    # P(last cell on) = g₁/n / (g₀ + g₁/n) = (p/n) / (1 + p/n)
    torch.testing.assert_close(prior.probs(n - 1), torch.tensor([[(p / n) / (1 + p / n)]], dtype=torch.float64))

    full = CountPrior(1, n, p, like)
    for i in range(n - 1):  # objects everywhere so far: K ≥ 3, the last cell is on iff K = 4
        full.update(torch.ones(1, 1, dtype=torch.float64), i)
    g = geometric(p, n)  # P(first 3 of 4 on | K = 3) = 1/4, | K = 4) = 1
    torch.testing.assert_close(full.probs(n - 1), (g[4] / (g[3] / 4 + g[4])).reshape(1, 1))
    assert float(full.count) == n - 1


def test_count_prior_marginal_matches_simulation():
    """Drawing z cell by cell from probs(i) reproduces the geometric count distribution."""
    n, p, draws = 5, 0.6, 20000
    torch.manual_seed(0)
    prior = CountPrior(draws, n, p, torch.zeros(1, dtype=torch.float64))
    for i in range(n):
        z = torch.bernoulli(prior.probs(i))
        prior.update(z, i)
    counts = torch.bincount(prior.count.long().flatten(), minlength=n + 1).double() / draws
    torch.testing.assert_close(counts, geometric(p, n), atol=0.015, rtol=0)


def test_relaxed_presence_in_unit_interval_and_straight_through():
    torch.manual_seed(0)
    logits = torch.randn(1000, requires_grad=True)
    z = presence(0.5, logits=logits).rsample()
    assert ((z > 0) & (z < 1)).all()
    hard = straight_through(z)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(hard, z.round())
    hard.sum().backward(retain_graph=True)
    grad_hard = logits.grad.clone()
    logits.grad = None
    z.sum().backward()  # same graph: the gradient is the soft sample's
    torch.testing.assert_close(grad_hard, logits.grad)
    probs = presence(1.0, probs=torch.tensor([0.0, 1.0])).probs  # clamped away from 0 and 1
    assert (probs > 0).all() and (probs < 1).all()


def test_bernoulli_kl_closed_form():
    q, p = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.1, 0.5, 0.3])
    expected = q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()
    torch.testing.assert_close(bernoulli_kl(q, p), expected)
    torch.testing.assert_close(bernoulli_kl(torch.logit(q), p, q_is_logits=True), expected)
    assert bernoulli_kl(q, q).abs().max() < 1e-6
    assert math.isfinite(float(bernoulli_kl(torch.tensor([1.0]), 0.0)))


def test_normal_std_is_positive():
    d = normal(torch.zeros(3), torch.tensor([-200.0, 0.0, 5.0]), min_std=1e-6)
    assert (d.stddev > 0).all()
    torch.testing.assert_close(d.stddev[1], torch.tensor(math.log(2.0) + 1e-6))


def test_bernoulli_kl_stays_finite_under_bf16():
    # In bf16, 1 - 1e-6 rounds to 1: without the float32 upcast log(1 - q) is -inf (GNM's loss was
    # inf at step 0 under bf16 autocast on a GPU).
    q = torch.tensor([0.0, 0.5, 1.0 - 1e-7, 1.0], dtype=torch.bfloat16)
    kl = bernoulli_kl(q, torch.full_like(q, 0.999))
    assert torch.isfinite(kl).all() and kl.dtype == torch.float32
