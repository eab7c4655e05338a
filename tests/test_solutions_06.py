"""The solutions of 06_shift_schedule's exercises."""

import math

import numpy as np
import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift

from kontext_teach.anatomy import full_size
from kontext_teach.schedule import base_sigmas, shift_mu, shifted_sigmas, time_shift
from kontext_teach.solutions.s06_shift_schedule import (bfl_schedule, inverse_time_shift, largest_step,
                                                         shift_for_size, smallest_square_side_with_shift)


@pytest.mark.parametrize("mu", [-1.0, 0.0, 0.4594, 1.15, 3.23])
@pytest.mark.parametrize("exponent", [1.0, 0.5, 2.0])
def test_inverse_time_shift_round_trips(mu, exponent):
    sigmas = torch.linspace(0.001, 1, 1000, dtype=torch.float64)
    assert torch.allclose(inverse_time_shift(mu, time_shift(mu, sigmas, exponent), exponent), sigmas, atol=1e-12)
    assert torch.allclose(time_shift(mu, inverse_time_shift(mu, sigmas, exponent), exponent), sigmas, atol=1e-12)


@pytest.mark.parametrize("num_steps", [4, 28, 30])
@pytest.mark.parametrize("tokens", [16, 1024, 4096])
def test_inverse_time_shift_recovers_the_linear_sigmas(num_steps, tokens):
    shifted = shifted_sigmas(num_steps, tokens)[:-1].double()
    recovered = inverse_time_shift(shift_mu(tokens), shifted)
    assert torch.allclose(recovered, torch.from_numpy(base_sigmas(num_steps)).double(), atol=1e-6)


@pytest.mark.parametrize("num_steps", [4, 28, 30, 50])
@pytest.mark.parametrize("tokens", [16, 256, 1024, 4096, 4150])
def test_bfl_schedule_equals_the_diffusers_scheduler(num_steps, tokens):
    scheduler = full_size.full_size_scheduler()
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=calculate_shift(tokens))
    ours = bfl_schedule(num_steps, tokens)
    assert ours.shape == (num_steps + 1,) and ours[-1] == 0
    assert torch.allclose(ours, scheduler.sigmas, atol=1e-6, rtol=0)


def test_thirty_steps_take_smaller_steps_than_twenty_eight():
    steps_28, steps_30 = largest_step(bfl_schedule(28, 4096)), largest_step(bfl_schedule(30, 4096))
    assert steps_30 < steps_28
    assert steps_28 == pytest.approx((shifted_sigmas(28, 4096)[:-1] - shifted_sigmas(28, 4096)[1:]).max().item(),
                                     abs=1e-6)


@pytest.mark.parametrize("height, width", [(1024, 1024), (512, 768), (64, 64), (2048, 2048), (672, 1568)])
def test_shift_for_size(height, width):
    assert shift_for_size(height, width) == pytest.approx(math.exp(calculate_shift((height // 16) * (width // 16))))


@pytest.mark.parametrize("min_shift", [0.5, 1.0, 1.5, 2.0, math.exp(1.15), 3.2, 10.0, 25.0])
def test_smallest_square_side_with_shift(min_shift):
    side = smallest_square_side_with_shift(min_shift)
    assert side % 16 == 0 and side >= 16
    assert shift_for_size(side, side) >= min_shift
    assert side == 16 or shift_for_size(side - 16, side - 16) < min_shift


def test_smallest_square_side_rejects_a_non_positive_shift():
    with pytest.raises(ValueError, match="positive"):
        smallest_square_side_with_shift(0.0)
