"""Configs of the embedded miniature Kontext.

The miniature uses the real diffusers / transformers classes at tiny sizes. Every
structural property of FLUX.1-Kontext-dev is kept (see ``full_size.py`` for the real
configs): 16 latent channels, an 8x VAE, ``in_channels = 16 * 2 * 2 = 64``, the guidance
embedding, three RoPE axes that sum to the head dim, a pooled projection as wide as the
CLIP hidden size, a context embedder as wide as the T5 model, and the real FLUX scheduler
config. Only widths and depths shrink.
"""

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_TOKENS = 77
T5_VOCAB_PIECES = 1000  # upper bound; the corpus decides (T5 adds 100 sentinels on top)

TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    out_channels=None,
    num_layers=2,  # double-stream (MMDiT) blocks; the real model has 19
    num_single_layers=2,  # single-stream blocks; the real model has 38
    attention_head_dim=16,  # real: 128
    num_attention_heads=4,  # real: 24
    joint_attention_dim=64,  # = T5 d_model
    pooled_projection_dim=64,  # = CLIP hidden size
    guidance_embeds=True,
    axes_dims_rope=(4, 6, 6),  # (virtual time, row, column); sums to attention_head_dim
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),  # 4 levels -> 2**3 = 8x down, as in FLUX
    layers_per_block=1,
    act_fn="silu",
    latent_channels=16,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.3611,  # FLUX's values until a trained VAE measures its own
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
    force_upcast=True,
)

CLIP_TEXT = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=CLIP_MAX_TOKENS,
    hidden_act="quick_gelu",
    projection_dim=64,
    bos_token_id=49406,
    eos_token_id=49407,  # pooled output = hidden state at the first end-of-text token
    pad_token_id=49407,
)

T5_ENCODER = dict(
    # vocab_size: set by the build from the trained tokenizer (pieces + 100 sentinels)
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX uses
    dropout_rate=0.0,
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
    is_encoder_decoder=False,
    use_cache=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# FLUX.1's scheduler config, unchanged: the schedule is part of what the series teaches.
SCHEDULER = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=4096,
    max_shift=1.15,
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
)

# Default picture size of the miniature: 64 px -> 8x8 latent -> 4x4 = 16 tokens.
IMAGE_SIZE = 64
