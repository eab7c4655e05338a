"""The full-size FLUX.1-Kontext-dev components, described without weights or memory.

The configs below are those of ``black-forest-labs/FLUX.1-Kontext-dev`` (its
``*/config.json`` files). ``meta_components()`` instantiates the real classes on
PyTorch's meta device: every parameter has a shape and a dtype but no storage, so an
11.9 B-parameter transformer costs nothing to build and can run forward passes that
only propagate shapes.
"""

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from ..toy import miniature

HUB_ID = "black-forest-labs/FLUX.1-Kontext-dev"

TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    out_channels=None,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
    force_upcast=True,
)

CLIP_TEXT = dict(  # openai/clip-vit-large-patch14, text tower
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

T5_ENCODER = dict(  # google/t5-v1_1-xxl, encoder only
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    is_encoder_decoder=False,
    use_cache=False,
)

SCHEDULER = miniature.SCHEDULER  # the miniature keeps FLUX's scheduler config unchanged
T5_MAX_TOKENS = 512
CLIP_MAX_TOKENS = 77


def meta_components() -> dict:
    """The four networks of FLUX.1-Kontext-dev on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return dict(
            transformer=FluxTransformer2DModel(**TRANSFORMER),
            vae=AutoencoderKL(**VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_TEXT)),
            text_encoder_2=T5EncoderModel(T5Config(**T5_ENCODER)),
        )


def full_size_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**SCHEDULER)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(components: dict) -> dict:
    """Name -> number of parameters, for every network in ``components``."""
    return {name: count_parameters(m) for name, m in components.items() if isinstance(m, torch.nn.Module)}
