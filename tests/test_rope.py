"""RoPE from scratch against diffusers' FluxPosEmbed, get_1d_rotary_pos_embed, apply_rotary_emb,
its properties, and what the context offset does inside the embedded transformer."""

import math

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from kontext_teach import position_ids as pid
from kontext_teach import rope

FULL, MINI = (16, 56, 56), (4, 6, 6)
EXACT = dict(atol=1e-6, rtol=0)


def random_ids(n, seed, high=64):
    return torch.randint(0, high, (n, 3), generator=torch.Generator().manual_seed(seed)).float()


# ---- frequencies and tables -------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 4, 6, 16, 56, 128])
def test_frequencies_are_the_phase_of_diffusers_complex_table_at_position_1(dim):
    cis = get_1d_rotary_pos_embed(dim, torch.tensor([1.0]), theta=10000, use_real=False, freqs_dtype=torch.float64)
    torch.testing.assert_close(rope.rope_frequencies(dim), cis.angle()[0], atol=1e-12, rtol=0)
    freqs = rope.rope_frequencies(dim)
    assert freqs[0] == 1 and torch.all(freqs[1:] < freqs[:-1])  # fastest first, strictly decreasing


@pytest.mark.parametrize("dim", [4, 6, 16, 56])
@pytest.mark.parametrize("positions", [torch.arange(10).float(), torch.tensor([0.0, 1.0, 97.0, 3.5]),
                                       torch.linspace(-5, 200, 33)])
def test_one_axis_tables_equal_get_1d_rotary_pos_embed(dim, positions):
    cos, sin = get_1d_rotary_pos_embed(dim, positions, theta=10000, use_real=True, repeat_interleave_real=True,
                                       freqs_dtype=torch.float64)
    ours_cos, ours_sin = rope.rope_cos_sin(positions, dim)
    torch.testing.assert_close(ours_cos, cos, **EXACT)
    torch.testing.assert_close(ours_sin, sin, **EXACT)
    assert torch.equal(ours_cos[:, 0::2], ours_cos[:, 1::2])  # each angle fills one channel pair


ID_SETS = [  # (name, ids)
    ("kontext 1024^2", pid.transformer_ids(512, (64, 64), (64, 64))),
    ("kontext 1568x672 / 672x1568", pid.transformer_ids(512, (98, 42), (42, 98))),
    ("kontext miniature 8x6", pid.transformer_ids(16, (8, 6), (8, 6))),
    ("random ids", random_ids(300, seed=0, high=200)),
    ("fractional ids", torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) * 30),
]


@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
@pytest.mark.parametrize("name, ids", ID_SETS, ids=[n for n, _ in ID_SETS])
def test_tables_equal_flux_pos_embed(axes, name, ids):
    cos, sin = FluxPosEmbed(theta=10000, axes_dim=list(axes))(ids)
    ours_cos, ours_sin = rope.rope_tables(ids, axes)
    assert ours_cos.shape == (ids.shape[0], sum(axes)) and ours_cos.dtype == torch.float32
    torch.testing.assert_close(ours_cos, cos, **EXACT)
    torch.testing.assert_close(ours_sin, sin, **EXACT)


# ---- rotation of q and k -----------------------------------------------------------------

@pytest.mark.parametrize("axes, heads", [(FULL, 3), (MINI, 4), ((2, 4, 10), 1)], ids=str)
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("sequence_dim", [1, 2])
def test_rotation_equals_apply_rotary_emb(axes, heads, batch, sequence_dim):
    ids = pid.transformer_ids(7, (5, 3), (4, 6))
    tables = FluxPosEmbed(theta=10000, axes_dim=list(axes))(ids)
    shape = (batch, ids.shape[0], heads, sum(axes)) if sequence_dim == 1 else (batch, heads, ids.shape[0], sum(axes))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(batch))
    expected = apply_rotary_emb(x, tables, use_real=True, use_real_unbind_dim=-1, sequence_dim=sequence_dim)
    torch.testing.assert_close(rope.apply_rope(x, *rope.rope_tables(ids, axes), sequence_dim=sequence_dim),
                               expected, **EXACT)


def test_rotation_keeps_lengths_and_is_the_identity_at_angle_zero():
    x = torch.randn(2, 20, 3, sum(FULL))
    cos, sin = rope.rope_tables(random_ids(20, seed=2), FULL)
    torch.testing.assert_close(rope.apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    zero_cos, zero_sin = rope.rope_tables(pid.text_ids(20), FULL)  # text ids: every angle is 0
    assert torch.equal(rope.apply_rope(x, zero_cos, zero_sin), x)


def test_rotate_pairs_is_a_quarter_turn():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rope.rotate_pairs(x).tolist() == [-2.0, 1.0, -4.0, 3.0]
    assert torch.equal(rope.rotate_pairs(rope.rotate_pairs(x)), -x)


# ---- properties: relative positions ------------------------------------------------------

@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
@pytest.mark.parametrize("shift", [(0.0, 5.0, -3.0), (1.0, 0.0, 0.0), (7.0, 40.0, 63.0)])
def test_scores_depend_only_on_position_differences(axes, shift):
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, sum(axes), generator=generator), torch.randn(9, sum(axes), generator=generator)
    q_ids, k_ids = random_ids(6, seed=4), random_ids(9, seed=5)
    shift = torch.tensor(shift)
    scores = rope.rope_scores(q, k, q_ids, k_ids, axes)
    torch.testing.assert_close(rope.rope_scores(q, k, q_ids + shift, k_ids + shift, axes), scores,
                               atol=1e-4, rtol=1e-4)
    # the same scores with every query at the origin and each key at its offset from the query
    for i in range(6):
        at_origin = rope.rope_scores(q[i:i + 1], k, torch.zeros(1, 3), k_ids - q_ids[i], axes)
        torch.testing.assert_close(at_origin[0], scores[i], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
def test_similarity_is_the_score_of_rotated_all_ones_vectors(axes):
    q_ids, k_ids = random_ids(4, seed=6), random_ids(11, seed=7)
    ones = torch.ones(1, sum(axes))
    scores = rope.rope_scores(ones.expand(4, -1), ones.expand(11, -1), q_ids, k_ids, axes) / sum(axes)
    torch.testing.assert_close(rope.rope_similarity(k_ids[None] - q_ids[:, None], axes), scores, atol=1e-5, rtol=0)


def test_similarity_of_one_axis_is_a_sum_of_cosines():
    delta = torch.tensor([[0.0], [1.0], [10.0]])
    freqs = rope.rope_frequencies(56)
    expected = torch.stack([torch.cos(d * freqs).mean() for d in delta[:, 0].double()]).float()
    torch.testing.assert_close(rope.rope_similarity(delta, (56,)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
def test_text_query_at_angle_zero_still_sees_the_key_position(axes):
    generator = torch.Generator().manual_seed(8)
    q, k = torch.randn(1, sum(axes), generator=generator), torch.randn(1, sum(axes), generator=generator)
    keys = pid.latent_grid_ids(4, 5)  # the same key vector at 20 grid positions
    scores = rope.rope_scores(q, k.expand(20, -1), pid.text_ids(1), keys, axes)[0]
    assert scores.unique().numel() == 20  # every position gives a different score
    assert math.isclose(scores[0].item(), (q @ k.T).item(), rel_tol=1e-5)  # at (0, 0, 0) no rotation at all


@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
@pytest.mark.parametrize("grid, query", [((8, 6), (0, 3, 2)), ((64, 64), (0, 10, 50))])
def test_similarity_map_peaks_at_the_query(axes, grid, query):
    same = rope.similarity_map(query, *grid, key_first_index=0, axes_dims=axes)
    assert same.shape == grid and same[query[1], query[2]].item() == pytest.approx(1.0)
    assert same.max().item() == pytest.approx(1.0)
    context = rope.similarity_map(query, *grid, key_first_index=1, axes_dims=axes)
    # the context copy of the query's own cell: offset (1, 0, 0), only the first axis turns
    expected = (sum(axes[1:]) / 2 + torch.cos(rope.rope_frequencies(axes[0])).sum().item()) / (sum(axes) / 2)
    assert context[query[1], query[2]].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("axes", [FULL, MINI], ids=str)
def test_context_offset_changes_only_the_first_axis_channels(axes):
    target, context = pid.latent_grid_ids(6, 4), pid.latent_grid_ids(6, 4, pid.CONTEXT_INDEX)
    (t_cos, t_sin), (c_cos, c_sin) = rope.rope_tables(target, axes), rope.rope_tables(context, axes)
    changed = (t_cos != c_cos).any(0) | (t_sin != c_sin).any(0)
    first_axis = torch.arange(sum(axes)) < axes[0]
    assert torch.equal(changed, first_axis)


# ---- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: rope.rope_frequencies(5), "positive, even number of channels"),
    (lambda: rope.rope_tables(torch.zeros(4, 2), MINI), "ids have 2 coordinates"),
    (lambda: rope.rope_tables(torch.zeros(1, 4, 3), MINI), r"ids must be \[sequence, 3\]"),
    (lambda: rope.rope_scores(torch.zeros(2, 12), torch.zeros(2, 12), torch.zeros(2, 3), torch.zeros(2, 3), MINI),
     "sum to 16 but the head dim is 12"),
    (lambda: rope.apply_rope(torch.zeros(1, 5, 2, 16), *rope.rope_tables(torch.zeros(4, 3), MINI)),
     r"needs cos and sin of shape \[5, 16\]"),
    (lambda: rope.apply_rope(torch.zeros(1, 5, 2, 16), *rope.rope_tables(torch.zeros(5, 3), MINI), sequence_dim=3),
     "sequence_dim=3"),
    (lambda: rope.with_context_index(torch.zeros(8, 3), 8, 1), "num_target=8"),
    (lambda: rope.swap_target_and_context(torch.zeros(1, 10, 4), 4), "equal length"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- inside the embedded transformer -----------------------------------------------------

MODEL_SIZES = [(1, 64, 64), (2, 128, 96), (1, 48, 80)]  # batch, height, width (px)


@pytest.fixture(scope="module", params=MODEL_SIZES, ids=lambda s: "b{}_{}x{}".format(*s))
def edit(request, pipe):
    batch, height, width = request.param
    inputs, num_target = rope.kontext_transformer_inputs(pipe, height=height, width=width, prompt="a red circle",
                                                         batch_size=batch, max_sequence_length=16)
    return inputs, num_target, (height, width)


def test_inputs_carry_the_kontext_ids(edit):
    inputs, num_target, (height, width) = edit
    grid = pid.token_grid(height, width)
    assert num_target == grid[0] * grid[1]
    assert torch.equal(inputs["img_ids"], pid.kontext_image_ids(grid, grid))
    assert torch.equal(inputs["txt_ids"], pid.text_ids(16))
    assert inputs["hidden_states"].shape[1] == 2 * num_target


def test_transformer_uses_exactly_our_tables(pipe, edit):
    inputs, _, _ = edit
    with rope.RopeTableRecorder(pipe.transformer) as recorder:
        rope.run_transformer(pipe.transformer, inputs)
    assert len(recorder.tables) == 1
    ours = rope.rope_tables(torch.cat([inputs["txt_ids"], inputs["img_ids"]]), pipe.transformer.config.axes_dims_rope)
    torch.testing.assert_close(ours[0], recorder.tables[0][0], **EXACT)
    torch.testing.assert_close(ours[1], recorder.tables[0][1], **EXACT)


@pytest.mark.parametrize("block_index", [0, 1])
def test_recorded_attention_is_reproduced_from_rotated_q_and_k(pipe, edit, block_index):
    inputs, _, _ = edit
    with rope.AttentionRecorder(pipe.transformer, block_index) as recorder:
        rope.run_transformer(pipe.transformer, inputs)
    r = recorder.recorded()
    logits = rope.attention_logits(r["q"], r["k"], r["cos"], r["sin"])
    torch.testing.assert_close(rope.attention_output(logits, r["v"]), r["out"], atol=1e-5, rtol=1e-5)


def test_attention_recorder_errors(pipe):
    with pytest.raises(ValueError, match="has 2 double-stream blocks"):
        rope.AttentionRecorder(pipe.transformer, 2)
    with pytest.raises(ValueError, match="nothing recorded yet"):
        rope.AttentionRecorder(pipe.transformer, 0).recorded()


def test_without_the_offset_target_and_context_are_interchangeable(pipe, edit):
    inputs, num_target, _ = edit
    offset0 = dict(img_ids=rope.with_context_index(inputs["img_ids"], num_target, 0))
    swapped = rope.swap_target_and_context(inputs["hidden_states"], num_target)
    out = rope.run_transformer(pipe.transformer, inputs, **offset0)
    out_swapped = rope.run_transformer(pipe.transformer, inputs, hidden_states=swapped, **offset0)
    torch.testing.assert_close(out_swapped, rope.swap_target_and_context(out, num_target), atol=1e-5, rtol=1e-5)
    # with the offset (the pipeline's ids), swapping the contents is not a mere permutation
    out1 = rope.run_transformer(pipe.transformer, inputs)
    out1_swapped = rope.run_transformer(pipe.transformer, inputs, hidden_states=swapped)
    assert rope.relative_change(out1_swapped, rope.swap_target_and_context(out1, num_target)) > 1e-4


def test_the_offset_changes_the_target_prediction(pipe, edit):
    inputs, num_target, _ = edit
    out1 = rope.run_transformer(pipe.transformer, inputs)
    out0 = rope.run_transformer(pipe.transformer, inputs,
                                img_ids=rope.with_context_index(inputs["img_ids"], num_target, 0))
    assert rope.relative_change(out0[:, :num_target], out1[:, :num_target]) > 1e-4
    again = rope.run_transformer(pipe.transformer, inputs,
                                 img_ids=rope.with_context_index(inputs["img_ids"], num_target, 1))
    assert torch.equal(again, out1)
