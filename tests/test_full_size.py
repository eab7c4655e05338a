"""The full-size FLUX.1-Kontext-dev components on the meta device."""

import pytest
import torch

from kontext_teach.anatomy import full_size
from kontext_teach.toy import miniature


@pytest.fixture(scope="module")
def components():
    return full_size.meta_components()


def test_parameter_counts_match_flux_kontext_dev(components):
    counts = full_size.parameter_counts(components)
    assert counts["transformer"] == 11_901_408_320
    assert round(counts["text_encoder_2"] / 1e9, 2) == 4.76
    assert round(counts["text_encoder"] / 1e6) == 123
    assert round(counts["vae"] / 1e6, 1) == 83.8


def test_meta_components_use_no_memory(components):
    assert all(p.device.type == "meta" for m in components.values() for p in m.parameters())


def test_miniature_keeps_every_structural_property_of_the_real_model():
    full, mini = full_size.TRANSFORMER, miniature.TRANSFORMER
    for key in ("patch_size", "in_channels", "guidance_embeds"):
        assert mini[key] == full[key]
    assert sum(mini["axes_dims_rope"]) == mini["attention_head_dim"]
    assert sum(full["axes_dims_rope"]) == full["attention_head_dim"]
    assert mini["pooled_projection_dim"] == miniature.CLIP_TEXT["hidden_size"]
    assert mini["joint_attention_dim"] == miniature.T5_ENCODER["d_model"]
    for key in ("latent_channels", "down_block_types", "use_quant_conv", "scaling_factor", "shift_factor"):
        assert miniature.VAE[key] == full_size.VAE[key]
    assert len(miniature.VAE["block_out_channels"]) == len(full_size.VAE["block_out_channels"])
    assert miniature.SCHEDULER == full_size.SCHEDULER


def test_full_size_transformer_runs_on_meta(components):
    with torch.device("meta"):
        out = components["transformer"](
            hidden_states=torch.empty(1, 8, 64), timestep=torch.ones(1), guidance=torch.ones(1),
            pooled_projections=torch.empty(1, 768), encoder_hidden_states=torch.empty(1, 4, 4096),
            txt_ids=torch.zeros(4, 3), img_ids=torch.zeros(8, 3), return_dict=False)[0]
    assert out.shape == (1, 8, 64) and out.device.type == "meta"
