"""The from-scratch FLUX transformer against diffusers: every piece, the whole model, and its costs."""

import copy

import matplotlib
import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding

from kontext_teach.anatomy import full_size
from kontext_teach import transformer as T
from kontext_teach.anatomy import transformer_costs as costs
from kontext_teach.anatomy.attention_maps import (TokenLayout, attention_maps, attention_shares, plot_attention_maps,
                                          plot_joint_attention)
from kontext_teach.position_ids import kontext_image_ids, latent_grid_ids, text_ids

matplotlib.use("Agg")

ATOL = 1e-5

# (batch, text tokens, target grid, context grid or None): square and non-square, with and without context
SHAPES = [
    (1, 5, (2, 2), (2, 2)),
    (2, 7, (3, 5), (4, 2)),
    (3, 3, (4, 1), None),
    (1, 12, (2, 6), (6, 2)),
]


@pytest.fixture(scope="module")
def reference(pipe):
    return pipe.transformer


@pytest.fixture(scope="module")
def ours(reference):
    return T.KontextTransformer.from_diffusers(reference)


def image_ids(target_grid, context_grid):
    return latent_grid_ids(*target_grid) if context_grid is None else kontext_image_ids(target_grid, context_grid)


def model_inputs(config, batch, num_text, target_grid, context_grid, timestep=None, guidance=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = image_ids(target_grid, context_grid)
    return dict(
        hidden_states=torch.randn(batch, ids.shape[0], config.in_channels, generator=generator),
        encoder_hidden_states=torch.randn(batch, num_text, config.text_dim, generator=generator),
        pooled_projections=torch.randn(batch, config.pooled_dim, generator=generator),
        timestep=torch.rand(batch, generator=generator) if timestep is None else torch.full([batch], timestep),
        guidance=torch.full([batch], 2.5) if guidance is None else torch.full([batch], guidance),
        img_ids=ids, txt_ids=text_ids(num_text))


def assert_close(ours, theirs, atol=ATOL):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- small functions


@pytest.mark.parametrize("timesteps", [[0.0], [1000.0, 3.5], [2500.0, 999.0, 1.0, 0.5]])
@pytest.mark.parametrize("channels", [256, 32])
def test_timestep_embedding_matches_diffusers(timesteps, channels):
    t = torch.tensor(timesteps)
    theirs = get_timestep_embedding(t, channels, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert_close(T.timestep_embedding(t, channels), theirs, atol=1e-6)


def test_timestep_embedding_rejects_a_matrix():
    with pytest.raises(ValueError, match="one value per sample"):
        T.timestep_embedding(torch.ones(2, 1))


@pytest.mark.parametrize("shape", [(2, 5, 64), (1, 3, 7, 16)])
def test_norms_match_torch(shape):
    x = torch.randn(shape) * 3 + 1
    assert_close(T.layer_norm(x), torch.nn.functional.layer_norm(x, shape[-1:], eps=1e-6))
    ours, theirs = T.RMSNorm(shape[-1]), torch.nn.RMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("shape", [(1, 2, 5, 8), (3, 4, 9, 16)])
def test_attention_matches_sdpa_and_returns_probabilities(shape):
    q, k, v = torch.randn(3, *shape).unbind(0)
    out, probs = T.attention(q, k, v)
    assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert probs.shape == (*shape[:3], shape[2])
    assert_close(probs.sum(-1), torch.ones(shape[:3]))


def test_heads_split_and_merge_round_trip():
    x = torch.randn(2, 5, 64)
    heads = T.split_heads(x, 4)
    assert heads.shape == (2, 4, 5, 16)
    assert torch.equal(heads[:, 1, :, :], x[:, :, 16:32])
    assert torch.equal(T.merge_heads(heads), x)


# ---------------------------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("batch, timestep, guidance", [(1, 0.0, 1.0), (2, 0.5, 2.5), (3, 1.0, 3.5)])
def test_conditioning_matches_combined_embeddings(reference, ours, batch, timestep, guidance):
    config = ours.config
    conditioning = T.Conditioning(config)
    T.load_diffusers_weights(conditioning, reference.time_text_embed.state_dict())
    pooled = torch.randn(batch, config.pooled_dim)
    t = torch.linspace(timestep, 1.0, batch) * 1000
    g = torch.full([batch], guidance * 1000)
    with torch.no_grad():
        assert_close(conditioning(t, g, pooled), reference.time_text_embed(t, g, pooled))
        assert_close(ours.conditioning(t, g, pooled), reference.time_text_embed(t, g, pooled))


@pytest.mark.parametrize("batch, length", [(1, 3), (2, 10)])
def test_adaln_modulation_matches_adalayernormzero(reference, ours, batch, length):
    dim = ours.config.dim
    x, temb = torch.randn(batch, length, dim), torch.randn(batch, dim)
    with torch.no_grad():
        attn_mod, mlp_mod = ours.double_blocks[0].img_mod(temb)
        normed, gate, shift_mlp, scale_mlp, gate_mlp = reference.transformer_blocks[0].norm1(x, emb=temb)
        assert_close(T.modulate(T.layer_norm(x), attn_mod.shift, attn_mod.scale), normed)
        for a, b in ((attn_mod.gate, gate), (mlp_mod.shift, shift_mlp), (mlp_mod.scale, scale_mlp),
                     (mlp_mod.gate, gate_mlp)):
            assert_close(a, b)
        (single_mod,) = ours.single_blocks[1].mod(temb)
        normed, gate = reference.single_transformer_blocks[1].norm(x, emb=temb)
        assert_close(T.modulate(T.layer_norm(x), single_mod.shift, single_mod.scale), normed)
        assert_close(single_mod.gate, gate)


def block_inputs(reference, batch, num_text, target_grid, context_grid, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dim = reference.inner_dim
    ids = torch.cat([text_ids(num_text), image_ids(target_grid, context_grid)])
    num_image = ids.shape[0] - num_text
    return (torch.randn(batch, num_image, dim, generator=generator), torch.randn(batch, num_text, dim, generator=generator),
            torch.randn(batch, dim, generator=generator), reference.pos_embed(ids))


@pytest.mark.parametrize("batch, num_text, target_grid, context_grid", SHAPES)
@pytest.mark.parametrize("index", [0, 1])
def test_double_block_matches_flux_transformer_block(reference, batch, num_text, target_grid, context_grid, index):
    theirs = reference.transformer_blocks[index]
    block = T.DoubleStreamBlock(T.TransformerConfig.from_diffusers(reference.config))
    T.load_diffusers_weights(block, theirs.state_dict())
    img, txt, temb, rope = block_inputs(reference, batch, num_text, target_grid, context_grid)
    with torch.no_grad():
        img_ours, txt_ours, probs = block(img, txt, temb, rope)
        txt_theirs, img_theirs = theirs(hidden_states=img, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
    assert_close(img_ours, img_theirs)
    assert_close(txt_ours, txt_theirs)
    heads = reference.config.num_attention_heads
    assert probs.shape == (batch, heads, num_text + img.shape[1], num_text + img.shape[1])


@pytest.mark.parametrize("batch, num_text, target_grid, context_grid", SHAPES)
@pytest.mark.parametrize("index", [0, 1])
def test_single_block_matches_flux_single_transformer_block(reference, batch, num_text, target_grid, context_grid,
                                                            index):
    theirs = reference.single_transformer_blocks[index]
    block = T.SingleStreamBlock(T.TransformerConfig.from_diffusers(reference.config))
    T.load_diffusers_weights(block, theirs.state_dict())
    img, txt, temb, rope = block_inputs(reference, batch, num_text, target_grid, context_grid, seed=1)
    with torch.no_grad():
        x, _ = block(torch.cat([txt, img], dim=1), temb, rope)
        txt_theirs, img_theirs = theirs(hidden_states=img, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
    assert_close(x, torch.cat([txt_theirs, img_theirs], dim=1))


@pytest.mark.parametrize("batch, length", [(1, 4), (3, 9)])
def test_final_layer_matches_norm_out_and_proj_out(reference, ours, batch, length):
    x, temb = torch.randn(batch, length, ours.config.dim), torch.randn(batch, ours.config.dim)
    with torch.no_grad():
        assert_close(ours.final.modulated_norm(x, temb), reference.norm_out(x, temb))
        assert_close(ours.final(x, temb), reference.proj_out(reference.norm_out(x, temb)))


def test_final_layer_splits_scale_before_shift(ours):
    """Swapping the halves of norm_out.linear (BFL's order) changes the result: the order matters."""
    final = copy.deepcopy(ours.final)
    x, temb = torch.randn(2, 5, ours.config.dim), torch.randn(2, ours.config.dim)
    with torch.no_grad():
        expected = ours.final.modulated_norm(x, temb)
        scale, shift = final.mod(torch.nn.functional.silu(temb)).chunk(2, dim=-1)
        assert_close(expected, T.layer_norm(x) * (1 + scale[:, None]) + shift[:, None])
        final.mod.weight.copy_(final.mod.weight.roll(ours.config.dim, dims=0))
        final.mod.bias.copy_(final.mod.bias.roll(ours.config.dim, dims=0))
        assert not torch.allclose(final.modulated_norm(x, temb), expected, atol=1e-3)


# ---------------------------------------------------------------------------------------------- whole model


@pytest.mark.parametrize("batch, num_text, target_grid, context_grid", SHAPES)
@pytest.mark.parametrize("timestep, guidance", [(1.0, 2.5), (0.37, 1.0), (0.02, 3.5)])
def test_whole_model_matches_flux_transformer(reference, ours, batch, num_text, target_grid, context_grid, timestep,
                                              guidance):
    inputs = model_inputs(ours.config, batch, num_text, target_grid, context_grid, timestep, guidance)
    with torch.no_grad():
        assert_close(ours(**inputs), reference(**inputs, return_dict=False)[0])


def test_whole_model_matches_on_pipeline_inputs(pipe, ours):
    """Inputs made by the pipeline's public methods: a real prompt, a condition image, Kontext ids."""
    from PIL import Image

    prompt_embeds, pooled, txt_ids = pipe.encode_prompt("make the red circle blue", prompt_2=None,
                                                        max_sequence_length=16)
    image = pipe.image_processor.preprocess(Image.new("RGB", (48, 80), (200, 40, 40)), 80, 48)
    latents, context, latent_ids, context_ids = pipe.prepare_latents(
        image, 1, 16, 64, 96, torch.float32, "cpu", torch.Generator().manual_seed(0))
    inputs = dict(hidden_states=torch.cat([latents, context], dim=1), encoder_hidden_states=prompt_embeds,
                  pooled_projections=pooled, timestep=torch.tensor([0.8]), guidance=torch.tensor([2.5]),
                  img_ids=torch.cat([latent_ids, context_ids]), txt_ids=txt_ids)
    with torch.no_grad():
        assert_close(ours(**inputs), pipe.transformer(**inputs, return_dict=False)[0])


def test_return_attention_gives_one_probability_tensor_per_block(ours):
    inputs = model_inputs(ours.config, 2, 5, (2, 3), (3, 2))
    with torch.no_grad():
        velocity, probs = ours(**inputs, return_attention=True)
    assert torch.equal(velocity, ours(**inputs))
    length = 5 + 12
    assert len(probs) == ours.config.num_double_blocks + ours.config.num_single_blocks
    for p in probs:
        assert p.shape == (2, ours.config.num_heads, length, length)
        assert_close(p.sum(-1), torch.ones(2, ours.config.num_heads, length))


def test_timestep_and_guidance_enter_only_through_modulation(ours):
    """With every AdaLN weight zeroed (biases kept), t and guidance can no longer change the output."""
    model = copy.deepcopy(ours)
    with torch.no_grad():
        for linear in T.modulation_linears(model):
            linear.weight.zero_()
        a = model(**model_inputs(ours.config, 2, 4, (2, 2), (2, 2), timestep=0.1, guidance=1.0))
        b = model(**model_inputs(ours.config, 2, 4, (2, 2), (2, 2), timestep=0.9, guidance=4.0))
        c = ours(**model_inputs(ours.config, 2, 4, (2, 2), (2, 2), timestep=0.9, guidance=4.0))
    assert torch.equal(a, b)
    assert not torch.allclose(b, c)


# ---------------------------------------------------------------------------------------------- loading, errors


def test_modulation_linears_are_the_adaln_layers(ours):
    names = {name for name, module in ours.named_modules() if any(module is m for m in T.modulation_linears(ours))}
    config = ours.config
    assert len(names) == 2 * config.num_double_blocks + config.num_single_blocks + 1
    diffusers_owners = {ours.diffusers_names()[f"{name}.weight"].removesuffix(".linear.weight").split(".")[-1]
                        for name in names}
    assert diffusers_owners == {"norm1", "norm1_context", "norm", "norm_out"}


def test_name_map_covers_every_parameter(reference, ours):
    names = ours.diffusers_names()
    assert set(names) == set(ours.state_dict())
    assert sorted(names.values()) == sorted(reference.state_dict())


def test_loading_fails_clearly_on_missing_and_unexpected_keys(reference):
    model = T.KontextTransformer(T.TransformerConfig.from_diffusers(reference.config))
    state = dict(reference.state_dict())
    del state["transformer_blocks.1.attn.to_q.weight"]
    with pytest.raises(ValueError, match=r"1 missing key\(s\) \['transformer_blocks.1.attn.to_q.weight'\]"):
        T.load_diffusers_weights(model, state)
    state = dict(reference.state_dict(), **{"transformer_blocks.0.attn.to_qkv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\) \['transformer_blocks.0.attn.to_qkv.weight'\]"):
        T.load_diffusers_weights(model, state)


def test_loading_fails_clearly_on_another_config(reference):
    config = T.TransformerConfig.from_diffusers(dict(reference.config, num_layers=3))
    with pytest.raises(ValueError, match="missing key.*same config"):
        T.load_diffusers_weights(T.KontextTransformer(config), reference.state_dict())
    config = T.TransformerConfig.from_diffusers(dict(reference.config, num_attention_heads=2,
                                                     attention_head_dim=32, axes_dims_rope=(8, 12, 12)))
    with pytest.raises(ValueError, match="shapes differ"):
        T.load_diffusers_weights(T.KontextTransformer(config), reference.state_dict())


def test_config_from_diffusers_reads_the_full_size_model():
    config = T.TransformerConfig.from_diffusers(full_size.TRANSFORMER)
    assert config == T.TransformerConfig()
    assert (config.dim, config.mlp_dim) == (3072, 12288)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="guidance_embeds=False"):
        T.TransformerConfig.from_diffusers(dict(full_size.TRANSFORMER, guidance_embeds=False))
    with pytest.raises(ValueError, match="must sum to head_dim"):
        T.TransformerConfig(axes_dims_rope=(16, 56, 48))


@pytest.mark.parametrize("change, message", [
    (dict(guidance=None), "guidance-distilled"),
    (dict(hidden_states=torch.zeros(1, 8, 16)), r"expected \[batch, tokens, 64\]"),
    (dict(img_ids=torch.zeros(1, 8, 3)), r"img_ids has shape \(1, 8, 3\)"),
    (dict(txt_ids=torch.zeros(5, 3)), r"txt_ids has shape \(5, 3\); expected \[4, 3\]"),
    (dict(timestep=torch.ones(1, 1)), r"timestep has shape \(1, 1\); expected \[1\]"),
    (dict(pooled_projections=torch.zeros(1, 7)), "CLIP pooler_output"),
    (dict(encoder_hidden_states=torch.zeros(2, 4, 64)), "the T5 sequence"),
])
def test_bad_inputs_get_clear_errors(ours, change, message):
    inputs = dict(model_inputs(ours.config, 1, 4, (2, 2), (2, 2)), **change)
    with pytest.raises(ValueError, match=message):
        ours(**inputs)


# ---------------------------------------------------------------------------------------------- attention maps


def test_attention_maps_index_the_right_tokens():
    layout = TokenLayout(num_text=3, target_grid=(2, 3), context_grid=(3, 2))
    probs = torch.zeros(1, 2, layout.length, layout.length)
    query = layout.num_text + 1 * 3 + 2  # target token at row 1, col 2
    probs[0, 0, query, layout.num_text + layout.num_target + 2 * 2 + 1] = 0.75  # context row 2, col 1
    probs[0, 0, query, 1] = 0.25  # text token 1
    probs[0, 1, query, layout.num_text + 0 * 3 + 1] = 1.0  # head 1: target row 0, col 1
    maps = attention_maps(probs, layout, row=1, col=2, head=0)
    assert maps["context"][2, 1] == 0.75 and maps["context"].sum() == 0.75
    assert maps["text"].tolist() == [0, 0.25, 0]
    assert maps["target"].sum() == 0
    mean = attention_maps(probs, layout, row=1, col=2)
    assert mean["target"][0, 1] == 0.5 and mean["context"][2, 1] == 0.375


@pytest.mark.parametrize("context_grid", [(2, 3), None])
def test_attention_maps_and_shares_of_the_model_sum_to_one(ours, context_grid):
    inputs = model_inputs(ours.config, 1, 6, (3, 2), context_grid)
    with torch.no_grad():
        _, probs = ours(**inputs, return_attention=True)
    layout = TokenLayout(6, (3, 2), context_grid)
    maps = attention_maps(probs[2], layout, row=2, col=1, head=3)
    assert set(maps) == ({"text", "target", "context"} if context_grid else {"text", "target"})
    assert abs(sum(m.sum().item() for m in maps.values()) - 1) < 1e-5
    shares = attention_shares(probs[0], layout)
    assert_close(sum(shares.values()), torch.ones(ours.config.num_heads))


@pytest.mark.parametrize("kwargs, message", [
    (dict(row=2, col=0), r"outside the 2x3 target grid"),
    (dict(row=0, col=0, head=4), r"heads 0..3"),
])
def test_attention_maps_reject_bad_queries(kwargs, message):
    layout = TokenLayout(2, (2, 3), (2, 2))
    with pytest.raises(ValueError, match=message):
        attention_maps(torch.rand(1, 4, layout.length, layout.length), layout, **kwargs)


def test_attention_maps_reject_probabilities_of_another_layout():
    with pytest.raises(ValueError, match="expected"):
        attention_maps(torch.rand(1, 4, 9, 9), TokenLayout(2, (2, 3), (2, 2)), 0, 0)


# ---------------------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("batch, num_text, target_grid, context_grid", SHAPES)
def test_flop_formula_matches_the_flop_counter(ours, batch, num_text, target_grid, context_grid):
    inputs = model_inputs(ours.config, batch, num_text, target_grid, context_grid)
    expected = costs.total_flops(costs.step_flops(ours.config, num_text, inputs["img_ids"].shape[0], batch))
    assert costs.measured_flops(ours, inputs) == expected


@pytest.mark.parametrize("batch, num_text, target_grid, context_grid", SHAPES[:2])
def test_flop_formula_matches_diffusers_model_on_meta(reference, batch, num_text, target_grid, context_grid):
    """On the meta device, SDPA decomposes into counted matmuls, so diffusers' own model can be measured."""
    with torch.device("meta"):
        model = type(reference)(**reference.config)
    config = T.TransformerConfig.from_diffusers(reference.config)
    inputs = {k: v.to("meta") for k, v in model_inputs(config, batch, num_text, target_grid, context_grid).items()}
    expected = costs.total_flops(costs.step_flops(config, num_text, inputs["img_ids"].shape[0], batch))
    assert costs.measured_flops(model, inputs) == expected


def test_flop_formula_matches_full_size_kontext_at_1024():
    model = full_size.meta_components()["transformer"]
    config = T.TransformerConfig.from_diffusers(model.config)
    with torch.device("meta"):
        inputs = model_inputs(config, 1, 512, (64, 64), (64, 64))
    inputs = {k: v.to("meta") for k, v in inputs.items()}
    breakdown = costs.step_flops(config, 512, 8192)
    assert costs.measured_flops(model, inputs) == costs.total_flops(breakdown)
    by_category = costs.flops_by_category(breakdown)
    assert sum(by_category.values()) == costs.total_flops(breakdown)
    assert by_category["modulation"] < 1e-3 * costs.total_flops(breakdown)


def test_block_flops_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="'double' or 'single'"):
        costs.block_flops(T.TransformerConfig(), "cross", 10, 10)


def test_parameter_counts_of_the_full_size_model():
    model = full_size.meta_components()["transformer"]
    per_module = costs.parameters_per_module(model)
    assert sum(per_module.values()) == 11_901_408_320
    config = T.TransformerConfig()
    for kind, count, index in (("transformer_blocks", 19, 0), ("single_transformer_blocks", 38, 5)):
        parts = costs.parameters_per_block_part(getattr(model, kind)[index])
        assert sum(parts.values()) * count == per_module[kind]
    double = costs.parameters_per_block_part(model.transformer_blocks[0])
    assert double["norm1.linear"] == config.dim * 6 * config.dim + 6 * config.dim
    assert double["attn.norm_q"] == config.head_dim
    single = costs.parameters_per_block_part(model.single_transformer_blocks[0])
    assert single["proj_out"] == (config.dim + config.mlp_dim) * config.dim + config.dim
    with torch.device("meta"):
        scratch = T.KontextTransformer(config)
    assert sum(p.numel() for p in scratch.parameters()) == 11_901_408_320
    T.load_diffusers_weights(scratch, model.state_dict())  # every name and shape fits at full size too


def test_parameters_by_category_split_the_full_size_model():
    model = full_size.meta_components()["transformer"]
    config = T.TransformerConfig()
    counts = costs.parameters_by_category(model)
    d, mlp = config.dim, config.mlp_dim
    assert sum(counts.values()) == 11_901_408_320
    assert counts["attention (QKᵀ, AV)"] == 0
    assert counts["modulation"] == 19 * 2 * (d * 6 * d + 6 * d) + 38 * (d * 3 * d + 3 * d)
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    assert counts["MLP"] == 19 * 2 * (linear(d, mlp) + linear(mlp, d)) + 38 * (linear(d, mlp) + mlp * d)
    assert counts["q/k/v/out projections"] == (19 * (2 * 4 * linear(d, d) + 4 * config.head_dim)
                                               + 38 * (3 * linear(d, d) + 2 * config.head_dim + d * d + d))


def test_block_linear_names_are_the_lora_targets(reference):
    names = costs.block_linear_names(reference)
    assert sorted(names["transformer_blocks"]) == sorted([
        "norm1.linear", "norm1_context.linear", "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2",
        "ff_context.net.0.proj", "ff_context.net.2"])
    assert sorted(names["single_transformer_blocks"]) == sorted([
        "norm.linear", "proj_mlp", "proj_out", "attn.to_q", "attn.to_k", "attn.to_v"])


# ---------------------------------------------------------------------------------------------- pictures


def test_pictures_draw(reference, ours):
    import matplotlib.pyplot as plt

    fig = T.draw_block_diagram()
    assert len(fig.axes) == 2
    layout = TokenLayout(4, (2, 3), (3, 2))
    with torch.no_grad():
        _, probs = ours(**model_inputs(ours.config, 1, 4, (2, 3), (3, 2)), return_attention=True)
    axes = plot_attention_maps(attention_maps(probs[0], layout, 1, 1), 1, 1, [f"t{i}" for i in range(4)])
    assert len(axes) == 3
    ax = plot_joint_attention(probs[2], layout, head=1)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["text", "target", "context"]
    breakdown = costs.step_flops(ours.config, 4, 12)
    ax = costs.plot_flops({"a": breakdown, "b": costs.step_flops(ours.config, 4, 6)})
    assert len(ax.patches) == 2 * len(costs.FLOP_CATEGORIES)
    ax = costs.plot_parameters_vs_flops(costs.parameters_by_category(reference), costs.flops_by_category(breakdown))
    assert len(ax.patches) == 2 * len(costs.FLOP_CATEGORIES)
    plt.close("all")
