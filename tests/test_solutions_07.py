"""The solutions of notebook 07's exercises, checked against diffusers, PEFT and the FLOP counter."""

import copy

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from kontext_teach.anatomy import full_size
from kontext_teach import transformer as T
from kontext_teach.position_ids import kontext_image_ids, latent_grid_ids, text_ids
from kontext_teach.solutions import s07_transformer_forward as S
from kontext_teach.anatomy.transformer_costs import measured_flops


# Exercise 1


@pytest.mark.parametrize("batch, length", [(1, 3), (2, 8)])
def test_bfl_final_norm_with_converted_weights_matches_diffusers(pipe, batch, length):
    norm_out = pipe.transformer.norm_out
    dim = pipe.transformer.inner_dim
    x, temb = torch.randn(batch, length, dim), torch.randn(batch, dim)
    weight, bias = S.norm_out_to_bfl(norm_out.linear.weight, norm_out.linear.bias)
    with torch.no_grad():
        torch.testing.assert_close(S.bfl_final_norm(x, temb, weight, bias), norm_out(x, temb), atol=1e-5, rtol=1e-5)
        unconverted = S.bfl_final_norm(x, temb, norm_out.linear.weight, norm_out.linear.bias)
    assert not torch.allclose(unconverted, norm_out(x, temb), atol=1e-3)


def test_norm_out_to_bfl_is_its_own_inverse():
    weight, bias = torch.randn(8, 3), torch.randn(8)
    twice = S.norm_out_to_bfl(*S.norm_out_to_bfl(weight, bias))
    assert torch.equal(twice[0], weight) and torch.equal(twice[1], bias)
    assert torch.equal(S.norm_out_to_bfl(weight, bias)[0][:4], weight[4:])


# Exercise 2


def peft_lora_parameters(model, targets, rank):
    model = copy.deepcopy(model)
    inject_adapter_in_model(LoraConfig(r=rank, target_modules=targets), model)
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


@pytest.mark.parametrize("targets, rank", [
    (["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"], 16),
    (["proj_out"], 4),  # also the model's final proj_out, not only the single blocks'
    (["attn.add_q_proj", "ff_context.net.0.proj", "norm1_context.linear", "proj_mlp", "norm.linear"], 3),
    (["to_q"], 8),
])
def test_lora_parameter_count_matches_peft(pipe, targets, rank):
    assert S.lora_parameter_count(pipe.transformer, targets, rank) == peft_lora_parameters(pipe.transformer,
                                                                                           targets, rank)


def test_lora_parameter_count_at_full_size_scales_with_rank():
    model = full_size.meta_components()["transformer"]
    targets = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
    r16 = S.lora_parameter_count(model, targets, 16)
    assert r16 == 4 * S.lora_parameter_count(model, targets, 4)
    dim = 3072
    assert r16 == 16 * 2 * dim * (19 * 4 + 38 * 3)  # to_out.0 only exists in the double blocks


def test_lora_parameter_count_rejects_a_bad_rank(pipe):
    with pytest.raises(ValueError, match="positive integer"):
        S.lora_parameter_count(pipe.transformer, ["attn.to_q"], 0)


# Exercise 3


def measured_call_flops(model, config, num_text, grid, with_context):
    ids = kontext_image_ids(grid, grid) if with_context else latent_grid_ids(*grid)
    with torch.device("meta"):
        inputs = dict(hidden_states=torch.empty(1, ids.shape[0], config.in_channels),
                      encoder_hidden_states=torch.empty(1, num_text, config.text_dim),
                      pooled_projections=torch.empty(1, config.pooled_dim), timestep=torch.ones(1),
                      guidance=torch.ones(1))
    return measured_flops(model, dict(inputs, img_ids=ids.to("meta"), txt_ids=text_ids(num_text).to("meta")))


@pytest.mark.parametrize("height, width, num_text", [(64, 64, 8), (96, 32, 16), (128, 80, 4)])
def test_context_flops_ratio_matches_the_flop_counter(pipe, height, width, num_text):
    with torch.device("meta"):
        model = type(pipe.transformer)(**pipe.transformer.config)
    config = T.TransformerConfig.from_diffusers(pipe.transformer.config)
    grid = (height // 16, width // 16)
    measured = (measured_call_flops(model, config, num_text, grid, True)
                / measured_call_flops(model, config, num_text, grid, False))
    assert S.context_flops_ratio(config, height, width, num_text) == pytest.approx(measured, rel=1e-12)


def test_context_flops_ratio_sits_between_the_linear_and_the_attention_ratio():
    config = T.TransformerConfig()
    ratio = S.context_flops_ratio(config, 1024, 1024)
    linear, quadratic = (8192 + 512) / (4096 + 512), ((8192 + 512) / (4096 + 512)) ** 2
    assert linear < ratio < quadratic
    assert S.context_flops_ratio(config, 512, 512) < ratio < S.context_flops_ratio(config, 2048, 2048)


def test_context_flops_ratio_rejects_sizes_that_do_not_pack():
    with pytest.raises(ValueError, match="multiples of 16"):
        S.context_flops_ratio(T.TransformerConfig(), 1000, 1024)
