"""inverse: projections and regularisers, against hand formulas, each error by its message."""

from __future__ import annotations

import math

import pytest
import torch

from functional_grads import inverse

F64 = torch.float64


def test_box_one_sided_and_tensor_bounds():
    x = torch.tensor([[-2.0, 0.5, 3.0]], dtype=F64)
    assert torch.equal(inverse.box(0.0)(x), torch.tensor([[0.0, 0.5, 3.0]], dtype=F64))  # clip_min alone
    assert torch.equal(inverse.box(clip_max=1.0)(x), torch.tensor([[-2.0, 0.5, 1.0]], dtype=F64))  # clip_max alone
    lo, hi = torch.tensor([-1.0, 1.0, 0.0], dtype=F64), torch.tensor([0.0, 2.0, 2.5], dtype=F64)
    assert torch.equal(inverse.box(lo, hi)(x), torch.tensor([[-1.0, 1.0, 2.5]], dtype=F64))  # per element
    assert torch.equal(inverse.box(-1, 1)(x), torch.tensor([[-1.0, 0.5, 1.0]], dtype=F64))  # ints are numbers
    assert torch.equal(inverse.box(1.0, 1.0)(x), torch.ones_like(x))  # an empty-width box is legal


@pytest.mark.parametrize("make, match", [
    (lambda: inverse.box(), r"^box: give clip_min, clip_max or both\.$"),
    (lambda: inverse.box(1.0, 0.0), r"^box: clip_min \(1\.0\) must not exceed clip_max \(0\.0\): the box would be empty\.$"),
    (lambda: inverse.box(math.nan), r"^box: clip_min must be a number \(finite\) or None, got nan\.$"),
    (lambda: inverse.box(0.0, "1"), r"^box: clip_max must be a number \(finite\) or None, got '1'\.$"),
    (lambda: inverse.linf_ball(torch.zeros(1, 2), -1.0), r"^linf_ball: radius must be a non-negative number \(finite\), got -1\.0\.$"),
    (lambda: inverse.l2_ball(torch.zeros(1, 2), math.inf), r"^l2_ball: radius must be a non-negative number \(finite\), got inf\.$"),
    (lambda: inverse.l2(-0.5), r"^l2: weight must be a non-negative number \(finite\), got -0\.5\.$"),
    (lambda: inverse.total_variation(-1.0), r"^total_variation: weight must be a non-negative number \(finite\), got -1\.0\.$"),
    (lambda: inverse.total_variation(1.0, eps=-1e-3), r"^total_variation: eps must be a non-negative number \(finite\), got -0\.001\.$"),
    (lambda: inverse.total_variation(1.0)(torch.ones(2, 3)), r"^total_variation: expects images \[B, \.\.\., H, W\], got shape \[2, 3\]\.$"),
])
def test_constraint_errors_name_the_api_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_balls_project_around_their_centre():
    center = torch.tensor([[1.0, 1.0], [0.0, -1.0]], dtype=F64)
    x = torch.tensor([[4.0, 5.0], [0.2, -0.9]], dtype=F64)
    linf = inverse.linf_ball(center, 0.5)(x)
    assert torch.equal(linf, torch.tensor([[1.5, 1.5], [0.2, -0.9]], dtype=F64))
    l2 = inverse.l2_ball(center, 2.5)(x)  # ||(3, 4)|| = 5 -> (1.5, 2)
    torch.testing.assert_close(l2, torch.tensor([[2.5, 3.0], [0.2, -0.9]], dtype=F64), rtol=0, atol=1e-15)
    assert torch.equal(inverse.linf_ball(center, 0.0)(x), center)  # radius 0: the centre


def test_l2_regulariser_with_and_without_a_centre():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    assert torch.equal(inverse.l2(0.5)(x), torch.tensor([2.5, 5.0], dtype=F64))
    center = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)
    assert torch.equal(inverse.l2(2.0, center)(x), torch.tensor([8.0, 16.0], dtype=F64))
    images = torch.ones(2, 1, 2, 2, dtype=F64)
    assert torch.equal(inverse.l2(1.0)(images), torch.tensor([4.0, 4.0], dtype=F64))  # flattened per sample


def test_total_variation_is_the_smoothed_forward_difference_norm():
    x = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 2.0, 0.0], [1.0, 5.0, 4.0]]], dtype=F64)  # one 3 x 3 image
    eps, weight = 0.1, 0.7
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]  # [[1, 2], [0, -2]]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]  # [[2, 1], [-1, 3]]
    want = weight * (dx**2 + dy**2 + eps**2).sqrt().sum()
    torch.testing.assert_close(inverse.total_variation(weight, eps=eps)(x), want.reshape(1), rtol=1e-15, atol=0)
    # by hand: sqrt(1 + 4 + .01) + sqrt(4 + 1 + .01) + sqrt(0 + 1 + .01) + sqrt(4 + 9 + .01)
    by_hand = weight * (2 * math.sqrt(5.01) + math.sqrt(1.01) + math.sqrt(13.01))
    assert abs(inverse.total_variation(weight, eps=eps)(x).item() - by_hand) < 1e-12
    batch = torch.stack([x, 2 * x])  # [2, 1, 3, 3]: channels are summed, samples kept apart
    tv = inverse.total_variation(1.0, eps=0.0)(batch)
    torch.testing.assert_close(tv[1], 2 * tv[0], rtol=1e-15, atol=0)


def test_total_variation_default_smoothing():
    flat = torch.zeros(1, 4, 5, dtype=F64)  # every difference 0: each of the 3 x 4 pixels gives eps
    torch.testing.assert_close(inverse.total_variation(2.0)(flat), torch.tensor([2.0 * 12 * 1e-3], dtype=F64),
                               rtol=1e-12, atol=0)
