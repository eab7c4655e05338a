"""The solutions of notebook 04_packing's exercises, checked against diffusers and by brute force."""

import pytest
import torch
from diffusers import FluxKontextPipeline

from kontext_teach.anatomy.sequence_costs import edit_sequence
from kontext_teach.packing import pack_latents
from kontext_teach.solutions.s04_packing import (largest_square_side, pack_with_unfold, token_and_feature,
                                                 unpack_with_fold)

SHAPES = [(1, 16, 2, 2), (2, 16, 8, 12), (3, 16, 12, 8), (1, 16, 88, 128), (2, 4, 6, 10), (1, 1, 4, 4)]


def random_latents(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pack_with_unfold_equals_diffusers(shape):
    latents = random_latents(shape)
    reference = FluxKontextPipeline._pack_latents(latents, *shape)
    assert torch.equal(pack_with_unfold(latents), reference)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unpack_with_fold_equals_diffusers(shape):
    batch, channels, height, width = shape
    tokens = random_latents((batch, (height // 2) * (width // 2), 4 * channels), seed=1)
    reference = FluxKontextPipeline._unpack_latents(tokens, 8 * height, 8 * width, 8)
    assert torch.equal(unpack_with_fold(tokens, height, width), reference)


def test_unfold_solutions_reject_odd_sizes():
    with pytest.raises(ValueError, match="width 5 is odd"):
        pack_with_unfold(torch.zeros(1, 16, 4, 5))
    with pytest.raises(ValueError, match="do not fill"):
        unpack_with_fold(torch.zeros(1, 6, 64), 4, 4)


@pytest.mark.parametrize("channels, height, width", [(2, 4, 6), (16, 6, 4), (3, 2, 10)])
def test_token_and_feature_finds_every_value(channels, height, width):
    """Pack a one-hot latent for every position: the 1 lands where the formula says."""
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                one_hot = torch.zeros(1, channels, height, width)
                one_hot[0, c, y, x] = 1
                token, feature = token_and_feature(c, y, x, width)
                assert pack_latents(one_hot)[0, token, feature] == 1


def test_token_and_feature_on_a_full_size_latent():
    latents = random_latents((1, 16, 128, 96))
    tokens = pack_latents(latents)
    for c, y, x in [(0, 0, 0), (15, 127, 95), (7, 64, 33), (3, 1, 94)]:
        token, feature = token_and_feature(c, y, x, 96)
        assert tokens[0, token, feature] == latents[0, c, y, x]


@pytest.mark.parametrize("args, match", [((0, 0, 6, 6), "not a pixel"), ((-1, 0, 0, 6), "not a pixel"),
                                         ((0, 0, 0, 7), "width 7 is odd")])
def test_token_and_feature_rejects_bad_positions(args, match):
    with pytest.raises(ValueError, match=match):
        token_and_feature(*args)


@pytest.mark.parametrize("max_tokens", [8704, 8703, 4608, 1000, 20000, 514, 600])
@pytest.mark.parametrize("kontext", [True, False])
@pytest.mark.parametrize("text_tokens", [512, 77])
def test_largest_square_side_by_brute_force(max_tokens, kontext, text_tokens):
    def total(side):
        return edit_sequence(side, side, context_size=(side, side) if kontext else None, text_tokens=text_tokens).total

    side = largest_square_side(max_tokens, kontext, text_tokens)
    assert side % 16 == 0 and side >= 16
    assert total(side) <= max_tokens < total(side + 16)


def test_largest_square_side_known_values():
    assert largest_square_side(8704) == 1024
    assert largest_square_side(8704, kontext=False) == 1440  # same sequence, no context image


def test_largest_square_side_rejects_budgets_without_room_for_an_image():
    with pytest.raises(ValueError, match="no room for an image"):
        largest_square_side(513)
