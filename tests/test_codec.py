"""The shared heatmap codec (diffpose.data.codec): targets, sub-pixel decoding, diffusion space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffpose.data.codec import HeatmapCodec

CODECS = [
    ((256, 192), (64, 48), 2.0),   # the paper's crop
    ((64, 48), (16, 12), 1.5),     # the CPU demo
    ((64, 48), (16, 12), 1.0),
    ((96, 64), (24, 16), 2.0),
]


def _random_keypoints(codec: HeatmapCodec, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = codec.input_size
    # anywhere in the crop, borders included (the cell area spans [-0.5, W - 0.5))
    return np.stack([rng.uniform(-0.49, w - 0.51, n), rng.uniform(-0.49, h - 0.51, n), np.ones(n)], 1)


@pytest.mark.parametrize("input_size,heatmap_size,sigma", CODECS)
def test_encode_decode_round_trip_is_sub_pixel_exact(input_size, heatmap_size, sigma):
    codec = HeatmapCodec(input_size, heatmap_size, sigma)
    kpts = _random_keypoints(codec, 500, seed=1)
    heatmaps, weight = codec.encode(kpts)
    assert heatmaps.shape == (500, *heatmap_size) and heatmaps.dtype == np.float32
    assert weight.dtype == np.float32 and (weight == 1).all()
    coords, scores = codec.decode(heatmaps[None])
    err_cells = np.abs(coords[0] - kpts[:, :2]) / codec.stride
    # exact up to float32 rounding of the maps (measured: < 2.4e-6 cells), border peaks included;
    # README.md cites this figure
    assert err_cells.max() < 1e-5
    assert ((scores > 0.5) & (scores <= 1.0)).all()


def test_without_refinement_argmax_alone_would_be_off():
    """Guards the test above: integer argmax decoding is off by up to half a cell."""
    codec = HeatmapCodec((64, 48), (16, 12), 1.5)
    kpts = np.array([[10.3, 20.7, 1.0]])
    heatmaps, _ = codec.encode(kpts)
    idx = heatmaps[0].argmax()
    cell = np.array([idx % 12, idx // 12], dtype=np.float64)
    assert np.abs(codec.to_input_coords(cell) - kpts[0, :2]).max() > 0.5
    coords, _ = codec.decode(heatmaps[None])
    assert np.abs(coords[0, 0] - kpts[0, :2]).max() < 0.01


def test_peak_is_one_at_a_cell_centre_and_the_mapping_is_cell_centred():
    codec = HeatmapCodec((64, 48), (16, 12), 2.0)
    # cell (3, 5) has its centre at input px (3.5 * 4 - 0.5, 5.5 * 4 - 0.5)
    heatmaps, _ = codec.encode(np.array([[13.5, 21.5, 2.0]]))
    assert heatmaps[0].max() == pytest.approx(1.0)
    assert np.unravel_index(heatmaps[0].argmax(), (16, 12)) == (5, 3)


def test_invisible_and_out_of_crop_joints_have_zero_weight_and_map():
    codec = HeatmapCodec((64, 48), (16, 12), 2.0)
    kpts = np.array([
        [20.0, 30.0, 1.0],     # fine
        [20.0, 30.0, 0.0],     # not labelled
        [-3.0, 30.0, 1.0],     # left of the crop
        [20.0, 64.5, 2.0],     # below the crop
        [np.nan, 3.0, 1.0],    # broken coordinate
        [47.4, 63.4, 1.0],     # last pixel: inside
    ])
    heatmaps, weight = codec.encode(kpts)
    assert weight.tolist() == [1, 0, 0, 0, 0, 1]
    assert heatmaps[1:5].max() == 0.0
    assert heatmaps[0].max() > 0.9 and heatmaps[5].max() > 0.5
    with pytest.raises(ValueError, match=r"\[J, 3\]"):
        codec.encode(np.zeros((17, 2)))


def test_decode_keeps_the_input_kind_and_batch_layout():
    codec = HeatmapCodec((64, 48), (16, 12), 1.5)
    kpts = _random_keypoints(codec, 6, seed=2)
    hm, _ = codec.encode(kpts)
    batch = np.stack([hm[:3], hm[3:]])                       # [B=2, J=3, h, w]
    np_xy, np_s = codec.decode(batch)
    t_xy, t_s = codec.decode(torch.from_numpy(batch))
    assert isinstance(np_xy, np.ndarray) and isinstance(t_xy, torch.Tensor)
    assert np_xy.shape == (2, 3, 2) and np_s.shape == (2, 3)
    np.testing.assert_allclose(t_xy.numpy(), np_xy, atol=1e-5)
    np.testing.assert_allclose(np_xy.reshape(6, 2), kpts[:, :2], atol=0.05)
    with pytest.raises(ValueError, match=r"\[B, J, h, w\]"):
        codec.decode(hm)


def test_decode_is_robust_on_flat_noisy_and_smoothed_maps():
    codec = HeatmapCodec((64, 48), (16, 12), 2.0)
    flat = torch.zeros(1, 2, 16, 12)
    xy, scores = codec.decode(flat)
    assert torch.isfinite(xy).all() and (scores == 0).all()
    # a noisy Gaussian still decodes near its centre (quarter-offset fallback or Newton step)
    kpts = np.array([[20.3, 33.8, 1.0]])
    hm, _ = codec.encode(kpts)
    noisy = hm + np.random.default_rng(0).normal(0, 0.05, hm.shape).astype(np.float32)
    xy, _ = codec.decode(noisy[None])
    assert np.abs(xy[0, 0] - kpts[0, :2]).max() < 0.5 * codec.stride.max()
    # DARK's distribution modulation (blur=True) is exact away from the border too
    blurred = HeatmapCodec((64, 48), (16, 12), 2.0, blur=True)
    xy, _ = blurred.decode(hm[None])
    assert np.abs(xy[0, 0] - kpts[0, :2]).max() < 0.05


def test_diffusion_space_mapping():
    codec = HeatmapCodec((64, 48), (16, 12), 2.0, signal_scale=2.0)
    x = torch.tensor([0.0, 0.25, 1.0])
    assert codec.to_diffusion(x).tolist() == [-2.0, -1.0, 2.0]
    assert torch.allclose(codec.from_diffusion(codec.to_diffusion(x)), x)
    assert codec.from_diffusion(torch.tensor([-5.0, 5.0])).tolist() == [0.0, 1.0]   # clamped
    assert np.allclose(codec.from_diffusion(np.array([-2.0, 0.0])), [0.0, 0.5])
    assert HeatmapCodec((64, 48), (16, 12), signal_scale=1.0).to_diffusion(torch.tensor(1.0)) == 1.0


def test_non_square_strides():
    codec = HeatmapCodec((64, 64), (16, 32), 1.5)   # stride 2 in x, 4 in y
    kpts = np.array([[30.3, 41.1, 1.0]])
    hm, _ = codec.encode(kpts)
    xy, _ = codec.decode(hm[None])
    np.testing.assert_allclose(xy[0, 0], kpts[0, :2], atol=0.02)
