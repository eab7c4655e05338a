"""Position ids: equal to what FluxKontextPipeline builds (prepare_latents, encode_prompt)."""

import numpy as np
import pytest
import torch

from kontext_teach import position_ids as pid


def pipeline_ids(pipe, batch, height, width, image_height, image_width):
    """latent_ids, image_ids from the public prepare_latents (a 16-channel image is taken as latents)."""
    down = pipe.vae_scale_factor
    context = torch.randn(batch, 16, image_height // down, image_width // down)
    _, _, latent_ids, image_ids = pipe.prepare_latents(context, batch, 16, height, width, torch.float32, "cpu",
                                                       torch.Generator().manual_seed(0))
    return latent_ids, image_ids


SIZES = [  # batch, target height, target width, context height, context width (px)
    (1, 64, 64, 64, 64),
    (2, 128, 96, 128, 96),
    (3, 48, 160, 96, 32),
    (1, 1568, 672, 672, 1568),  # a preferred Kontext resolution, non-square, and its transpose as context
]


@pytest.mark.parametrize("batch, height, width, image_height, image_width", SIZES)
def test_target_and_context_ids_equal_the_pipelines(pipe, batch, height, width, image_height, image_width):
    latent_ids, image_ids = pipeline_ids(pipe, batch, height, width, image_height, image_width)
    target_grid, context_grid = pid.token_grid(height, width), pid.token_grid(image_height, image_width)
    torch.testing.assert_close(pid.latent_grid_ids(*target_grid), latent_ids, atol=0, rtol=0)
    torch.testing.assert_close(pid.latent_grid_ids(*context_grid, pid.CONTEXT_INDEX), image_ids, atol=0, rtol=0)
    # the pipeline concatenates them along the sequence, target first
    torch.testing.assert_close(pid.kontext_image_ids(target_grid, context_grid),
                               torch.cat([latent_ids, image_ids]), atol=0, rtol=0)


@pytest.mark.parametrize("max_sequence_length", [8, 77, 512])
def test_text_ids_equal_encode_prompts(pipe, max_sequence_length):
    _, _, text_ids = pipe.encode_prompt(prompt="make the circle blue", prompt_2=None, device="cpu",
                                        max_sequence_length=max_sequence_length)
    torch.testing.assert_close(pid.text_ids(max_sequence_length), text_ids, atol=0, rtol=0)


@pytest.mark.parametrize("height, width", [(64, 64), (100, 70), (1024, 1024), (1568, 672), (31, 47)])
def test_token_grid_floors_like_prepare_latents(pipe, height, width):
    latent_ids, _ = pipeline_ids(pipe, 1, height, width, 64, 64)
    rows, cols = pid.token_grid(height, width)
    assert rows * cols == latent_ids.shape[0]
    assert (rows - 1, cols - 1) == tuple(latent_ids[-1, 1:].int().tolist())


def test_transformer_ids_are_text_then_target_then_context():
    ids = pid.transformer_ids(5, (3, 4), (2, 6))
    assert ids.shape == (5 + 12 + 12, 3)
    assert torch.equal(ids[:5], torch.zeros(5, 3))
    assert torch.equal(ids[5:17, 0], torch.zeros(12)) and torch.equal(ids[17:, 0], torch.ones(12))
    assert torch.equal(ids[5:], pid.kontext_image_ids((3, 4), (2, 6)))


@pytest.mark.parametrize("grid", [(1, 1), (3, 5), (7, 2)])
def test_ids_as_planes_puts_each_coordinate_at_its_cell(grid):
    planes = pid.ids_as_planes(pid.latent_grid_ids(*grid, first_index=1), *grid)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    assert torch.equal(planes[0], torch.ones(grid))
    assert torch.equal(planes[1], rows.float()) and torch.equal(planes[2], cols.float())


def test_context_index_can_be_chosen():
    ids = pid.kontext_image_ids((2, 2), (2, 2), context_index=0)
    assert torch.equal(ids[:4], ids[4:])  # offset 0: context ids coincide with target ids


@pytest.mark.parametrize("call, message", [
    (lambda: pid.latent_grid_ids(0, 4), "grid_height must be a positive int"),
    (lambda: pid.latent_grid_ids(4, 2.5), "grid_width must be a positive int"),
    (lambda: pid.text_ids(0), "num_tokens must be a positive int"),
    (lambda: pid.token_grid(8, 64), "no full 16x16 px patch"),
    (lambda: pid.ids_as_planes(torch.zeros(6, 3), 2, 4), r"expected the \[8, 3\] ids"),
    (lambda: pid.kontext_image_ids((2, 2), (0, 2)), "grid_height must be a positive int"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_integer_like_sizes_are_accepted():
    expected = pid.latent_grid_ids(3, 4)
    assert torch.equal(pid.latent_grid_ids(np.int64(3), torch.tensor(4)), expected)
