"""Packing against diffusers: the pipeline's public prepare_latents and decode path, and (tests
only) FluxKontextPipeline._pack_latents / _unpack_latents as the reference."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import FluxKontextPipeline  # noqa: E402
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS  # noqa: E402

from kontext_teach.anatomy.sequence_costs import (  # noqa: E402
    REFERENCE_SIZE, SequenceLength, attention_share, describe_resolution, draw_flops, draw_sequence_costs,
    edit_sequence, format_resolution_table, preferred_resolution_table)
from kontext_teach.packing import (  # noqa: E402
    check_packable, draw_feature_maps, draw_packing, latent_size, pack_latents, pack_with_pixel_unshuffle,
    patch_embed_as_conv, token_feature_sources, unpack_latents)
from kontext_teach.position_ids import token_grid  # noqa: E402
from kontext_teach.transformer import TransformerConfig  # noqa: E402


def num_image_tokens(height, width):
    rows, cols = token_grid(height, width)
    return rows * cols

# (batch, channels, latent height, latent width): square, non-square both ways, tiny, large, odd channels
SHAPES = [(1, 16, 2, 2), (2, 16, 8, 12), (3, 16, 12, 8), (1, 16, 88, 128), (2, 4, 6, 10), (1, 1, 4, 4),
          (4, 3, 2, 14)]


def random_latents(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pack_equals_diffusers(shape):
    latents = random_latents(shape)
    batch, channels, height, width = shape
    reference = FluxKontextPipeline._pack_latents(latents, batch, channels, height, width)
    assert torch.equal(pack_latents(latents), reference)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unpack_equals_diffusers(shape):
    batch, channels, height, width = shape
    tokens = random_latents((batch, (height // 2) * (width // 2), 4 * channels), seed=1)
    # diffusers takes the image size and the VAE factor; ours takes the latent size
    reference = FluxKontextPipeline._unpack_latents(tokens, 8 * height, 8 * width, 8)
    assert torch.equal(unpack_latents(tokens, height, width), reference)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pixel_unshuffle_gives_the_same_tokens(shape):
    latents = random_latents(shape)
    assert torch.equal(pack_with_pixel_unshuffle(latents), pack_latents(latents))


@pytest.mark.parametrize("image_batch, batch", [(1, 1), (2, 2), (1, 3)])
@pytest.mark.parametrize("latent_hw", [(8, 8), (6, 12), (14, 4)], ids=str)
def test_pack_equals_prepare_latents_image_path(pipe, image_batch, batch, latent_hw):
    """A 16-channel `image` is taken as latents: prepare_latents packs (and repeats) it."""
    latents = random_latents((image_batch, 16, *latent_hw))
    _, image_tokens, _, image_ids = pipe.prepare_latents(latents, batch, 16, 64, 64, torch.float32, "cpu")
    expected = pack_latents(latents).repeat(batch // image_batch, 1, 1)
    assert torch.equal(image_tokens, expected)
    assert image_ids.shape[0] == expected.shape[1]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("height, width", [(64, 64), (48, 96), (112, 32), (100, 72)])
def test_pack_equals_prepare_latents_noise_path(pipe, batch, height, width):
    """Without `latents`, prepare_latents draws [B, 16, h, w] noise and packs it."""
    generator = torch.Generator().manual_seed(7)
    noise_tokens, _, latent_ids, _ = pipe.prepare_latents(None, batch, 16, height, width, torch.float32, "cpu",
                                                          generator)
    noise = torch.randn((batch, 16, *latent_size(height, width)), generator=torch.Generator().manual_seed(7))
    assert torch.equal(noise_tokens, pack_latents(noise))
    assert latent_ids.shape[0] == num_image_tokens(height, width)


def test_prepare_latents_passes_given_latents_unchanged(pipe):
    """`latents=` must already be packed: prepare_latents does not pack it."""
    packed = random_latents((1, 16, 64))
    returned, *_ = pipe.prepare_latents(None, 1, 16, 64, 64, torch.float32, "cpu", None, packed)
    assert torch.equal(returned, packed)


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80)])
def test_unpack_matches_the_pipeline_decode(pipe, height, width):
    """Public path: the pipeline's packed output, unpacked by us and decoded, is its image."""
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3))  # [0, 1], as the pipeline expects
    common = dict(image=image, prompt="a red square", height=height, width=width, max_area=height * width,
                  _auto_resize=False, num_inference_steps=1)
    tokens = pipe(**common, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    decoded = pipe(**common, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    vae = pipe.vae
    latents = unpack_latents(tokens, *latent_size(height, width))
    with torch.no_grad():
        ours = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    ours = (ours / 2 + 0.5).clamp(0, 1)  # what postprocess(output_type="pt") does
    torch.testing.assert_close(ours, decoded, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ properties


def random_shapes(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda low, high: int(torch.randint(low, high, (1,), generator=generator))  # noqa: E731
    return [(draw(1, 4), draw(1, 20), 2 * draw(1, 12), 2 * draw(1, 12)) for _ in range(count)]


@pytest.mark.parametrize("shape", SHAPES + random_shapes(20), ids=str)
def test_unpack_inverts_pack_exactly(shape):
    latents = random_latents(shape)
    tokens = pack_latents(latents)
    assert tokens.shape == (shape[0], (shape[2] // 2) * (shape[3] // 2), 4 * shape[1])
    assert torch.equal(unpack_latents(tokens, *shape[2:]), latents)
    assert torch.equal(pack_latents(unpack_latents(tokens, *shape[2:])), tokens)


@pytest.mark.parametrize("shape", SHAPES + random_shapes(10, seed=1), ids=str)
def test_pack_is_a_permutation(shape):
    """Every value moves, none changes: token t, feature f holds the latent value at its source."""
    latents = random_latents(shape)
    tokens = pack_latents(latents)
    assert torch.equal(tokens.flatten(1).sort().values, latents.flatten(1).sort().values)
    sources = token_feature_sources(*shape[1:])  # [L, 4C, 3]
    c, y, x = sources.unbind(-1)
    assert torch.equal(tokens, latents[:, c, y, x])
    flat = (c * shape[2] + y) * shape[3] + x  # each latent position exactly once
    assert torch.equal(flat.flatten().sort().values, torch.arange(flat.numel()))


def test_feature_order_is_channel_then_patch_row_then_patch_col():
    sources = token_feature_sources(3, 4, 6)
    c, y, x = sources.unbind(-1)
    features = torch.arange(12)
    assert torch.equal(c[0], features // 4)
    assert torch.equal(y[0] % 2, features % 4 // 2)
    assert torch.equal(x[0] % 2, features % 2)
    # tokens run over the 2 x 3 patch grid row by row
    assert torch.equal(y[:, 0] // 2, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.equal(x[:, 0] // 2, torch.tensor([0, 1, 2, 0, 1, 2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_pack_keeps_dtype_and_values(dtype):
    latents = random_latents((2, 16, 6, 4), dtype=dtype) if dtype.is_floating_point else torch.arange(768).reshape(2, 16, 6, 4)
    tokens = pack_latents(latents)
    assert tokens.dtype == dtype
    assert torch.equal(unpack_latents(tokens, 6, 4), latents)


def test_pack_accepts_non_contiguous_latents():
    latents = random_latents((2, 16, 10, 6)).transpose(2, 3)  # [2, 16, 6, 10], not contiguous
    assert torch.equal(pack_latents(latents), pack_latents(latents.contiguous()))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("height, width, match", [
    (5, 6, r"5x6 latent .* height 5 is odd\. Pad it to 6x6 or crop it to 4x6.* multiples of 16"),
    (4, 7, r"width 7 is odd\. Pad it to 4x8 or crop it to 4x6"),
    (3, 9, r"height 3 and width 9 are odd"),
    (1, 4, r"Pad it to 2x4, or make .* e\.g\. 16x32 px"),
])
def test_odd_latent_sizes_get_a_helpful_error(height, width, match):
    with pytest.raises(ValueError, match=match):
        pack_latents(torch.zeros(1, 16, height, width))
    with pytest.raises(ValueError, match=match):
        check_packable(height, width)


def test_pack_wants_a_batch_axis():
    with pytest.raises(ValueError, match=r"got shape \(16, 4, 4\)\. For a single latent add the batch axis"):
        pack_latents(torch.zeros(16, 4, 4))


@pytest.mark.parametrize("tokens_shape, size, match", [
    ((1, 16, 64), (8, 6), r"16 tokens do not fill a 8x6 latent, which has 4x3 = 12 patches.*image size // 8"),
    ((1, 16, 64), (64, 64), r"not the image size"),
    ((1, 16, 62), (8, 8), r"62 features per token is not 4 x channels"),
    ((16, 64), (8, 8), r"expected tokens \[B, L, 4C\]"),
    ((1, 16, 64), (7, 8), r"height 7 is odd"),
])
def test_unpack_rejects_tokens_that_do_not_fit(tokens_shape, size, match):
    with pytest.raises(ValueError, match=match):
        unpack_latents(torch.zeros(tokens_shape), *size)


# ------------------------------------------------------------------ token counts and cost


@pytest.mark.parametrize("width, height", PREFERRED_KONTEXT_RESOLUTIONS)
def test_token_counts_of_preferred_resolutions_match_prepare_latents(pipe, width, height):
    image_latents = torch.zeros(1, 16, height // 8, width // 8)
    target, context, target_ids, context_ids = pipe.prepare_latents(image_latents, 1, 16, height, width,
                                                                    torch.float32, "cpu")
    assert target.shape[1] == context.shape[1] == num_image_tokens(height, width) == (height // 16) * (width // 16)
    sequence = edit_sequence(height, width, context_size=(height, width))
    assert sequence.total == 512 + target_ids.shape[0] + context_ids.shape[0]


@pytest.mark.parametrize("height, width", [(1024, 1024), (100, 72), (17, 33), (1000, 600)])
def test_latent_size_floors_like_prepare_latents(pipe, height, width):
    noise_tokens, *_ = pipe.prepare_latents(None, 1, 16, height, width, torch.float32, "cpu",
                                            torch.Generator().manual_seed(0))
    assert noise_tokens.shape[1] == num_image_tokens(height, width)
    latent_height, latent_width = latent_size(height, width)
    assert latent_height % 2 == latent_width % 2 == 0
    assert latent_height * 8 <= height < (latent_height + 2) * 8


def test_sequence_of_a_1024_edit():
    edit = edit_sequence(1024, 1024, context_size=(1024, 1024))
    assert (edit.text, edit.target, edit.context, edit.total) == (512, 4096, 4096, 8704)
    assert edit.attention_pairs == 8704 ** 2
    assert edit_sequence(1024, 1024) == SequenceLength(512, 4096, 0)
    assert edit_sequence(512, 768, context_size=(1024, 1024), text_tokens=77).total == 77 + 32 * 48 + 4096


@pytest.mark.parametrize("total", [600, 4608, 8704, 18432, 40000])
def test_attention_share_is_about_l_over_l_plus_6d(total):
    sequence = SequenceLength(text=512, target=(total - 512) // 2, context=total - 512 - (total - 512) // 2)
    assert attention_share(sequence) == pytest.approx(total / (total + 6 * 3072), rel=0.01)
    miniature = TransformerConfig(num_double_blocks=2, num_single_blocks=2, num_heads=4, head_dim=16, text_dim=64,
                                  pooled_dim=64, axes_dims_rope=(4, 6, 6))
    assert attention_share(sequence, miniature) == pytest.approx(total / (total + 6 * 64), rel=0.01)


def test_preferred_resolution_table():
    rows = preferred_resolution_table()
    assert [(r["width"], r["height"]) for r in rows] == list(PREFERRED_KONTEXT_RESOLUTIONS)
    reference = next(r for r in rows if (r["height"], r["width"]) == REFERENCE_SIZE)
    assert reference["relative_cost"] == 1.0 and reference["tokens"] == 4096
    for row in rows:
        sequence = row["sequence"]
        assert sequence.target == sequence.context == (row["height"] // 16) * (row["width"] // 16)
        assert row["relative_cost"] == pytest.approx((sequence.total / 8704) ** 2)
        assert row["cost_vs_text_to_image"] == pytest.approx((sequence.total / (512 + sequence.target)) ** 2)
        assert 0.95 < row["relative_cost"] < 1.05  # all about one megapixel
    table = format_resolution_table(rows).splitlines()
    assert len(table) == 18 and "1024 x 1024" in table[9] and "8704" in table[9]


def test_describe_resolution():
    text = describe_resolution(1024, 1024)
    assert "latent 16 x 128 x 128 -> 64 x 64 = 4096 tokens" in text
    assert "512 text + 4096 target + 4096 context = 8704 tokens" in text
    assert "1.000 x a 1024 x 1024 Kontext edit" in text and "32 %" in text
    text = describe_resolution(880, 1184, kontext=False)
    assert "latent 16 x 148 x 110 -> 74 x 55 = 4070 tokens" in text and "context" not in text
    assert f"{(4582 / 4608) ** 2:.3f} x a 1024 x 1024 text-to-image" in text


def test_pictures_draw():
    for figure in (draw_packing(), draw_packing(channels=2, latent_height=2, latent_width=8, token=3),
                   draw_sequence_costs(preferred_resolution_table()), draw_flops([256, 512, 1024])):
        assert figure.axes
        plt.close(figure)


@pytest.mark.parametrize("shape", [(1, 16, 6, 10), (2, 16, 8, 4), (3, 4, 2, 2)], ids=str)
@pytest.mark.parametrize("hidden", [64, 96])
def test_patch_embed_as_conv_equals_the_linear_on_packed_tokens(shape, hidden):
    torch.manual_seed(0)
    x_embedder = torch.nn.Linear(4 * shape[1], hidden)
    latents = random_latents(shape)
    expected = x_embedder(pack_latents(latents))
    torch.testing.assert_close(patch_embed_as_conv(latents, x_embedder), expected, atol=1e-5, rtol=1e-5)


def test_patch_embed_as_conv_with_the_pipeline_x_embedder(pipe):
    latents = random_latents((2, 16, 6, 10))
    x_embedder = pipe.transformer.x_embedder
    with torch.no_grad():
        torch.testing.assert_close(patch_embed_as_conv(latents, x_embedder), x_embedder(pack_latents(latents)),
                                   atol=1e-5, rtol=1e-5)


def test_feature_maps_draw():
    figure = draw_feature_maps(random_latents((1, 3, 8, 12))[0], ["R", "G", "B"])
    assert len(figure.axes) == 15
    plt.close(figure)
