"""The exercise solutions of 05_position_ids_rope."""

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from kontext_teach import position_ids as pid
from kontext_teach import rope
from kontext_teach.solutions import s05_position_ids_rope as s05


@pytest.mark.parametrize("axes, heads", [((16, 56, 56), 2), ((4, 6, 6), 4), ((2, 4, 10), 1)], ids=str)
@pytest.mark.parametrize("batch, target_grid, context_grid", [(1, (4, 4), (4, 4)), (3, (6, 2), (3, 5))])
def test_complex_rope_equals_diffusers(axes, heads, batch, target_grid, context_grid):
    ids = pid.transformer_ids(6, target_grid, context_grid)
    x = torch.randn(batch, ids.shape[0], heads, sum(axes), generator=torch.Generator().manual_seed(0))
    expected = apply_rotary_emb(x, FluxPosEmbed(theta=10000, axes_dim=list(axes))(ids), sequence_dim=1)
    torch.testing.assert_close(s05.apply_rope_complex(x, ids, axes), expected, atol=1e-5, rtol=1e-5)


def test_complex_rope_rejects_mismatched_axes():
    with pytest.raises(ValueError, match="sum to 16 but the head dim is 12"):
        s05.apply_rope_complex(torch.zeros(1, 3, 1, 12), torch.zeros(3, 3), (4, 6, 6))


@pytest.mark.parametrize("target_grid, context_grid", [((4, 4), (4, 4)), ((64, 64), (42, 98)), ((3, 7), (5, 2))])
def test_one_context_image_gives_the_pipelines_ids(target_grid, context_grid):
    assert torch.equal(s05.multi_context_ids(target_grid, [context_grid]),
                       pid.kontext_image_ids(target_grid, context_grid))


def test_each_context_image_gets_its_own_virtual_time():
    grids = [(2, 3), (4, 4), (1, 5)]
    ids = s05.multi_context_ids((3, 3), grids)
    sizes = [9] + [h * w for h, w in grids]
    assert ids.shape == (sum(sizes), 3)
    for index, block in enumerate(ids.split(sizes)):
        assert torch.equal(block[:, 0], torch.full((block.shape[0],), float(index)))
    for block, grid in zip(ids.split(sizes)[1:], grids):
        assert torch.equal(block[:, 1:], pid.latent_grid_ids(*grid)[:, 1:])
    with pytest.raises(ValueError, match="at least one context grid"):
        s05.multi_context_ids((3, 3), [])


@pytest.fixture(scope="module")
def edit(pipe):
    return rope.kontext_transformer_inputs(pipe, height=96, width=64, prompt="a red circle", batch_size=2,
                                           max_sequence_length=16)


@pytest.mark.parametrize("shift", [(0.0, 0.0, 0.0), (3.0, 5.0, -2.0), (0.5, 40.0, 17.0)])
def test_shifting_every_id_together_leaves_the_output_unchanged(pipe, edit, shift):
    inputs, _ = edit
    reference = rope.run_transformer(pipe.transformer, inputs)
    torch.testing.assert_close(s05.output_with_shifted_ids(pipe.transformer, inputs, shift), reference,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shift", [(0.0, 5.0, 5.0), (2.0, 0.0, 0.0)])
def test_shifting_only_the_image_ids_changes_the_output(pipe, edit, shift):
    inputs, _ = edit
    reference = rope.run_transformer(pipe.transformer, inputs)
    moved = s05.output_with_shifted_ids(pipe.transformer, inputs, shift, shift_text=False)
    assert rope.relative_change(moved, reference) > 1e-4


def test_shift_needs_one_number_per_coordinate(pipe, edit):
    with pytest.raises(ValueError, match="one number per id coordinate"):
        s05.output_with_shifted_ids(pipe.transformer, edit[0], (1.0, 2.0))
