"""Heatmap diffusion apart from any network: schedule, noising, loss, DDIM, ensembles."""

from __future__ import annotations

import math

import pytest
import torch

from diffpose.data.codec import HeatmapCodec
from diffpose.diffusion.ensemble import combine
from diffpose.diffusion.gaussian import HeatmapDiffusion, weighted_mse
from diffpose.diffusion.schedule import cosine_alpha_bar


def test_cosine_schedule_matches_the_closed_form():
    ab = cosine_alpha_bar(1000, 0.008)
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert (ab[1:] < ab[:-1]).all() and 0.99 < ab[0] < 1.0 and ab[-1] < 1e-4
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 250, 500, 900):  # away from the clipped end the product telescopes to f(t+1)/f(0)
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    betas = 1 - ab[1:] / ab[:-1]
    assert betas.max() <= 0.999 + 1e-12


def test_q_sample_ends():
    d = HeatmapDiffusion(timesteps=1000)
    x0 = torch.full((2, 3, 4, 4), 1.5)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(d.q_sample(x0, torch.tensor([0, 0]), noise), x0, atol=0.1)
    assert torch.allclose(d.q_sample(x0, torch.tensor([999, 999]), noise), noise, atol=0.02)


def test_ddim_timesteps():
    d = HeatmapDiffusion(timesteps=1000)
    assert d.ddim_times(1) == [(999, -1)]
    pairs = d.ddim_times(5)
    assert len(pairs) == 5 and pairs[0][0] == 999 and pairs[-1][1] == -1
    assert all(a > b for a, b in pairs)
    with pytest.raises(ValueError, match="steps"):
        d.ddim_times(0)
    with pytest.raises(ValueError, match="exceeds"):
        d.ddim_times(1001)


def test_sampler_with_an_oracle_returns_x0_for_any_step_count():
    d = HeatmapDiffusion(timesteps=1000, signal_scale=2.0)
    x0 = torch.linspace(-3, 3, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    calls = []

    def oracle(x_t, t):
        calls.append(int(t[0]))
        return x0

    for steps in (1, 4, 10):
        calls.clear()
        out = d.sample(oracle, (2, 3, 4, 4), steps=steps, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out, x0.clamp(-2, 2))    # clamped to the signal range
        assert len(calls) == steps and calls[0] == 999


def test_sampler_noise_paths_are_seeded_and_eta_matters():
    d = HeatmapDiffusion(timesteps=1000)
    denoise = lambda x_t, t: 0.5 * x_t + t.float().view(-1, 1, 1, 1) / 1000  # depends on x_t  # noqa: E731
    run = lambda seed, eta=None: d.sample(denoise, (1, 2, 3, 3), steps=4, eta=eta,  # noqa: E731
                                          generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    assert not torch.allclose(run(0, eta=0.0), run(0, eta=1.0))


def test_weighted_x0_loss():
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    assert weighted_mse(pred, target).item() == pytest.approx(1.0)
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert weighted_mse(pred, target, w).item() == pytest.approx(3 / 6)
    d = HeatmapDiffusion(timesteps=1000)
    perfect = d.loss(lambda x_t, t: target, target, w)
    assert perfect.item() == 0.0
    assert d.loss(lambda x_t, t: x_t, target, torch.zeros(2, 3)).item() == 0.0


def test_timestep_sampling_power_favours_small_t():
    uni = HeatmapDiffusion(timesteps=1000)
    low = HeatmapDiffusion(timesteps=1000, timestep_sampling="power", timestep_power=3.0)
    g = torch.Generator().manual_seed(0)
    t_uni, t_low = uni.sample_timesteps(4000, generator=g), low.sample_timesteps(4000, generator=g)
    assert t_uni.min() >= 0 and t_uni.max() <= 999 and t_low.max() <= 999
    assert 450 < t_uni.float().mean() < 550 and t_low.float().mean() < 300


def test_schedule_is_a_non_persistent_buffer_that_follows_the_module():
    d = HeatmapDiffusion(timesteps=10)
    assert "alpha_bar" not in d.state_dict()
    assert d.to(torch.float64).alpha_bar.dtype == torch.float64


def _gauss(x: float, y: float, peak: float = 1.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    return peak * torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5 ** 2))


def test_ensemble_rules():
    codec = HeatmapCodec((64, 48), (16, 12), 1.5)
    a, b, c = _gauss(3, 5), _gauss(5, 5), _gauss(9, 12, 0.2)
    stack = torch.stack([a, b, c])[:, None, None]                # [K=3, B=1, J=1, h, w]
    assert torch.allclose(combine(stack, "mean_heatmap"), stack.mean(0))
    assert torch.allclose(combine(stack, "median_heatmap"), stack.median(0).values)
    two = torch.stack([a, b])[:, None, None]
    # even K: the mean of the two middle values (torch's median would give the per-pixel minimum)
    assert torch.allclose(combine(two, "median_heatmap"), (a + b)[None, None] / 2)
    assert not torch.allclose(combine(two, "median_heatmap"), torch.minimum(a, b)[None, None])
    four = torch.stack([a, b, c, 3 * a])[:, None, None]
    middle = torch.stack([a, b, c, 3 * a]).sort(0).values[1:3].mean(0)
    assert torch.allclose(combine(four, "median_heatmap"), middle[None, None])
    merged = combine(two, "mean_coords", codec)
    xy, score = codec.decode(merged)
    expected = codec.to_input_coords(torch.tensor([4.0, 5.0], dtype=torch.float64))
    assert torch.allclose(xy[0, 0].double(), expected, atol=0.02) and score.item() == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(combine(stack[:1], "mean_coords", codec), stack[0])   # K = 1 passes through
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        combine(stack, "vote")


def test_per_row_generators_make_a_sample_independent_of_its_batch():
    """DDIM with eta 1 draws noise at every step; with one generator per row, row r of a batch of
    three equals the same row sampled alone (one shared generator would not: the rows' draws
    interleave)."""
    diffusion = HeatmapDiffusion(timesteps=100)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x_t

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    shape = (3, 2, 4, 4)
    together = diffusion.sample(denoise, shape, steps=3, eta=1.0, generator=gens([7, 8, 9]))
    alone = diffusion.sample(denoise, (1, *shape[1:]), steps=3, eta=1.0, generator=gens([8]))
    assert torch.equal(together[1:2], alone)
    shared = diffusion.sample(denoise, shape, steps=3, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(shared[0:1], alone) and not torch.equal(shared[1:2], alone)
    with pytest.raises(ValueError, match="2 generators for 3 noise rows"):
        diffusion.sample(denoise, shape, steps=1, generator=gens([1, 2]))
