"""FLUX's rotary position embedding (RoPE), from scratch, one 1-D RoPE per id axis.

Every adjacent channel pair (2j, 2j+1) of a query or key is rotated by the angle
omega_j * p, where p is the token's coordinate on that pair's axis and
omega_j = 1 / theta ** (2j / d) for an axis of d channels. The head dim is split into
axes (FLUX.1: 16 + 56 + 56 = 128; the miniature: 4 + 6 + 6 = 16), one per id coordinate
(virtual time, row, column). A rotation by p on the query and by s on the key leaves the
dot product depending on s - p only.

The second half runs the embedded transformer with chosen ids, to measure what the
Kontext context offset (first coordinate 1) changes.
"""

import torch

from .position_ids import latent_grid_ids

THETA = 10000.0  # FluxPosEmbed(theta=10000, ...) in FluxTransformer2DModel


def check_axes(axes_dims, num_axes: int | None = None, head_dim: int | None = None) -> None:
    """Raise a ValueError that says what to fix if axes_dims cannot split a head for RoPE."""
    if any(d <= 0 or d % 2 for d in axes_dims):
        raise ValueError(f"axes_dims {tuple(axes_dims)}: every axis needs a positive, even number of channels "
                         "(RoPE rotates channel pairs), e.g. (16, 56, 56) or (4, 6, 6)")
    if num_axes is not None and len(axes_dims) != num_axes:
        raise ValueError(f"ids have {num_axes} coordinates but axes_dims {tuple(axes_dims)} has {len(axes_dims)} "
                         "axes; give one axis size per id coordinate")
    if head_dim is not None and sum(axes_dims) != head_dim:
        raise ValueError(f"axes_dims {tuple(axes_dims)} sum to {sum(axes_dims)} but the head dim is {head_dim}; "
                         "the axes must split the head dim exactly (FLUX.1: 16 + 56 + 56 = 128)")


def rope_frequencies(dim: int, theta: float = THETA) -> torch.Tensor:
    """[dim/2] angular frequencies omega_j = 1 / theta ** (2j / dim), float64, fastest first."""
    check_axes((dim,))
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim  # 2j / dim
    return 1.0 / theta ** exponents


def rope_angles(positions: torch.Tensor, dim: int, theta: float = THETA) -> torch.Tensor:
    """[S] positions on one axis -> [S, dim/2] angles p * omega_j (float64)."""
    return torch.outer(positions.double(), rope_frequencies(dim, theta).to(positions.device))


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float = THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis: [S] positions -> cos, sin tables [S, dim], each angle repeated for its channel pair."""
    angles = rope_angles(positions, dim, theta)  # [S, dim/2]
    cos = angles.cos().repeat_interleave(2, dim=-1).float()  # [S, dim]: c0 c0 c1 c1 ...
    sin = angles.sin().repeat_interleave(2, dim=-1).float()  # [S, dim]
    return cos, sin


def rope_tables(ids: torch.Tensor, axes_dims, theta: float = THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """[S, n_axes] ids -> cos, sin [S, sum(axes_dims)]: one 1-D table per axis, side by side."""
    if ids.ndim != 2:
        raise ValueError(f"ids must be [sequence, {len(axes_dims)}], got shape {tuple(ids.shape)}; "
                         "pass the ids of one sample (the transformer shares them over the batch)")
    check_axes(axes_dims, num_axes=ids.shape[1])
    tables = [rope_cos_sin(ids[:, axis], dim, theta) for axis, dim in enumerate(axes_dims)]
    cos = torch.cat([c for c, _ in tables], dim=-1)  # [S, D]
    sin = torch.cat([s for _, s in tables], dim=-1)  # [S, D]
    return cos, sin


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Each channel pair (a, b) -> (-b, a): a quarter turn, the 'sin' partner of x."""
    a, b = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)  # [..., D/2] each
    return torch.stack([-b, a], dim=-1).flatten(-2)  # [..., D]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sequence_dim: int = 1) -> torch.Tensor:
    """Rotate every channel pair of x: x * cos + rotate_pairs(x) * sin (computed in fp32).

    x is [B, S, H, D] (sequence_dim=1, the layout FluxAttnProcessor uses) or [B, H, S, D]
    (sequence_dim=2); cos and sin are [S, D].
    """
    if sequence_dim not in (1, 2):
        raise ValueError(f"sequence_dim={sequence_dim}: use 1 for [B, S, H, D] or 2 for [B, H, S, D]")
    if x.ndim != 4 or cos.shape != (x.shape[sequence_dim], x.shape[-1]) or sin.shape != cos.shape:
        raise ValueError(f"x {tuple(x.shape)} with sequence_dim={sequence_dim} needs cos and sin of shape "
                         f"[{x.shape[sequence_dim] if x.ndim == 4 else 'S'}, {x.shape[-1]}], got {tuple(cos.shape)} "
                         f"and {tuple(sin.shape)}; build them from the ids of every token in the sequence")
    if sequence_dim == 1:
        cos, sin = cos[:, None, :], sin[:, None, :]  # [S, 1, D]: shared by all heads
    out = x.float() * cos + rotate_pairs(x).float() * sin
    return out.to(x.dtype)


def rope_scores(q: torch.Tensor, k: torch.Tensor, q_ids: torch.Tensor, k_ids: torch.Tensor, axes_dims,
                theta: float = THETA) -> torch.Tensor:
    """Dot products of rotated queries [Sq, D] and keys [Sk, D] at their ids: [Sq, Sk] (no 1/sqrt(D))."""
    check_axes(axes_dims, head_dim=q.shape[-1])
    q_cos, q_sin = rope_tables(q_ids, axes_dims, theta)
    k_cos, k_sin = rope_tables(k_ids, axes_dims, theta)
    q_rot = q.float() * q_cos + rotate_pairs(q).float() * q_sin  # [Sq, D]
    k_rot = k.float() * k_cos + rotate_pairs(k).float() * k_sin  # [Sk, D]
    return q_rot @ k_rot.T  # [Sq, Sk]


def rope_similarity(delta_ids: torch.Tensor, axes_dims, theta: float = THETA) -> torch.Tensor:
    """[..., n_axes] id differences -> [...] mean over channel pairs of cos(omega_j * delta).

    The cosine similarity of an all-ones query and key after rotation: the score RoPE alone
    gives two identical vectors spread evenly over all channel pairs; 1 at distance 0.
    """
    check_axes(axes_dims, num_axes=delta_ids.shape[-1])
    total = 0.0
    for axis, dim in enumerate(axes_dims):
        angles = delta_ids[..., axis, None].double() * rope_frequencies(dim, theta).to(delta_ids.device)  # [..., dim/2]
        total = total + angles.cos().sum(-1)
    return (total / (sum(axes_dims) // 2)).float()


def similarity_map(query_id, grid_height: int, grid_width: int, key_first_index: int, axes_dims,
                   theta: float = THETA) -> torch.Tensor:
    """[H, W] RoPE similarity between one query id and every key of a grid whose first coordinate
    is key_first_index (0: the target grid, 1: the Kontext context grid)."""
    keys = latent_grid_ids(grid_height, grid_width, key_first_index)  # [H*W, 3]
    delta = keys - torch.as_tensor(query_id, dtype=torch.float32)  # [H*W, 3]
    return rope_similarity(delta, axes_dims, theta).reshape(grid_height, grid_width)


# ---- RoPE inside the embedded transformer -------------------------------------------------

@torch.no_grad()
def kontext_transformer_inputs(pipe, *, height: int, width: int, prompt: str, seed: int = 0, batch_size: int = 1,
                               max_sequence_length: int = 512, sigma: float = 0.5,
                               guidance: float = 2.5) -> tuple[dict, int]:
    """The keyword arguments of one transformer call of a Kontext edit, built with the pipeline's
    public methods, and the number of target tokens.

    The context "image" is a random 16-channel latent of the same size as the target (the
    positions, not the pixels, are what this module studies); ``prepare_latents`` packs it
    and builds the ids.
    """
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    generator = torch.Generator().manual_seed(seed)
    prompt_embeds, pooled, txt_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                                        max_sequence_length=max_sequence_length)
    latent_channels = pipe.transformer.config.in_channels // 4
    down = pipe.vae_scale_factor
    context = torch.randn(batch_size, latent_channels, 2 * (height // (2 * down)), 2 * (width // (2 * down)),
                          generator=generator)
    latents, context_tokens, latent_ids, image_ids = pipe.prepare_latents(
        context, batch_size, latent_channels, height, width, dtype, device, generator)
    inputs = dict(
        hidden_states=torch.cat([latents, context_tokens], dim=1),  # [B, Lt + Lc, 64]
        encoder_hidden_states=prompt_embeds.repeat(batch_size, 1, 1),  # [B, T, joint_attention_dim]
        pooled_projections=pooled.repeat(batch_size, 1),  # [B, pooled_projection_dim]
        timestep=torch.full((batch_size,), sigma, device=device, dtype=dtype),
        guidance=torch.full((batch_size,), guidance, device=device, dtype=dtype),
        txt_ids=txt_ids,  # [T, 3]
        img_ids=torch.cat([latent_ids, image_ids], dim=0),  # [Lt + Lc, 3]
    )
    return inputs, latents.shape[1]


@torch.no_grad()
def run_transformer(transformer, inputs: dict, **overrides) -> torch.Tensor:
    """Output [B, Lt + Lc, 64] of one transformer call; overrides replace entries of inputs."""
    return transformer(**{**inputs, **overrides}, return_dict=False)[0]


def with_context_index(img_ids: torch.Tensor, num_target: int, context_index: float) -> torch.Tensor:
    """Copy of [Lt + Lc, 3] image ids with the context tokens' first coordinate set to context_index."""
    if not 0 < num_target < img_ids.shape[0]:
        raise ValueError(f"num_target={num_target} must leave both target and context tokens in the "
                         f"{img_ids.shape[0]} image ids")
    ids = img_ids.clone()
    ids[num_target:, 0] = context_index
    return ids


def swap_target_and_context(tokens: torch.Tensor, num_target: int) -> torch.Tensor:
    """[B, Lt + Lc, C] -> [B, Lc + Lt, C]: the context block first, then the target block."""
    if 2 * num_target != tokens.shape[1]:
        raise ValueError(f"swapping needs target and context blocks of equal length, got {num_target} target "
                         f"tokens of {tokens.shape[1]}; use a context image of the target's size")
    return torch.cat([tokens[:, num_target:], tokens[:, :num_target]], dim=1)


def relative_change(new: torch.Tensor, reference: torch.Tensor) -> float:
    """||new - reference|| / ||reference||."""
    return ((new - reference).norm() / reference.norm()).item()


class RopeTableRecorder:
    """Context manager that records the (cos, sin) tables the transformer's pos_embed computes."""

    def __init__(self, transformer):
        self.pos_embed = transformer.pos_embed
        self.tables: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self):
        self._handle = self.pos_embed.register_forward_hook(lambda module, args, out: self.tables.append(out))
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


class AttentionRecorder:
    """Context manager that records, in one double-stream block's joint attention, the queries
    and keys after the QK RMSNorm (what RoPE rotates), the values, and the attention output
    (what goes into ``to_out`` / ``to_add_out``), each [B, T + L, ...] with the text first.
    Also records the pos_embed tables. Uses forward hooks on the block's public submodules."""

    def __init__(self, transformer, block_index: int = 0):
        blocks = transformer.transformer_blocks
        if not 0 <= block_index < len(blocks):
            raise ValueError(f"block_index={block_index}: the transformer has {len(blocks)} double-stream blocks "
                             f"(0 to {len(blocks) - 1})")
        self.attn, self.pos_embed = blocks[block_index].attn, transformer.pos_embed
        self.heads = self.attn.heads
        self._outputs: dict[str, torch.Tensor] = {}

    def _keep(self, name, pre=False):
        def hook(module, args, *out):
            self._outputs[name] = args[0] if pre else out[0]
        return hook

    def __enter__(self):
        attn = self.attn
        posts = {"q_img": attn.norm_q, "k_img": attn.norm_k, "v_img": attn.to_v, "q_txt": attn.norm_added_q,
                 "k_txt": attn.norm_added_k, "v_txt": attn.add_v_proj, "rope": self.pos_embed}
        pres = {"out_img": attn.to_out[0], "out_txt": attn.to_add_out}
        self._handles = [m.register_forward_hook(self._keep(n)) for n, m in posts.items()]
        self._handles += [m.register_forward_pre_hook(self._keep(n, pre=True)) for n, m in pres.items()]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False

    def recorded(self) -> dict[str, torch.Tensor]:
        """q, k, v [B, S, H, Dh]; out [B, S, H*Dh]; cos, sin [S, Dh] (S = text + image tokens)."""
        o = self._outputs
        if not o:
            raise ValueError("nothing recorded yet: run the transformer inside `with AttentionRecorder(...)` first")
        heads = lambda x: x.unflatten(-1, (self.heads, -1))  # [B, S, H*Dh] -> [B, S, H, Dh]
        return dict(q=torch.cat([o["q_txt"], o["q_img"]], dim=1), k=torch.cat([o["k_txt"], o["k_img"]], dim=1),
                    v=torch.cat([heads(o["v_txt"]), heads(o["v_img"])], dim=1),
                    out=torch.cat([o["out_txt"], o["out_img"]], dim=1), cos=o["rope"][0], sin=o["rope"][1])


def attention_logits(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores of joint attention: [B, S, H, Dh] queries and keys -> [B, H, S, S]."""
    q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, S, H, Dh]
    return torch.einsum("bshd,bthd->bhst", q_rot, k_rot) / q.shape[-1] ** 0.5  # [B, H, S, S]


def attention_output(logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(logits) @ v: [B, H, S, S] and [B, S, H, Dh] -> [B, S, H*Dh]."""
    weights = logits.softmax(dim=-1)  # [B, H, S, S]
    return torch.einsum("bhst,bthd->bshd", weights, v).flatten(2)  # [B, S, H*Dh]
