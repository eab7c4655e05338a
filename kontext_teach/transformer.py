"""FLUX's transformer (diffusers ``FluxTransformer2DModel``) rebuilt from scratch, nanoGPT style.

One vector ``temb`` (timestep + guidance + pooled CLIP) steers every block through AdaLN
modulation. 19 double-stream (MMDiT) blocks keep text and image tokens in two streams with
their own weights but run **one joint attention** over [text; image]; 38 single-stream
blocks then treat the concatenation as one sequence, attention and MLP in parallel; an
AdaLN output head maps the image tokens back to 64 packed latent features.

The modules use their own short names (``img_attn.q``, ``txt_mlp.fc1``, ...);
``diffusers_names()`` maps each parameter to its diffusers name, so
``KontextTransformer.from_diffusers(pipe.transformer)`` loads any diffusers FLUX.1
checkpoint and fails clearly on a missing or unexpected key. RoPE comes from
kontext_teach.rope (rope_tables, apply_rope), built from scratch in notebook 05.

``draw_block_diagram()`` draws the two block kinds with diffusers' module names. What the
model attends to is in kontext_teach.anatomy.attention_maps; what it costs (parameters, FLOPs, LoRA
targets) in kontext_teach.anatomy.transformer_costs.
"""

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope, rope_tables

NORM_EPS = 1e-6  # the LayerNorms and the QK RMSNorms


# ----------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class TransformerConfig:
    """The sizes of a FLUX.1 transformer (defaults: FLUX.1-dev / Kontext-dev)."""

    in_channels: int = 64  # packed latent features: 16 VAE channels x 2 x 2
    num_double_blocks: int = 19
    num_single_blocks: int = 38
    num_heads: int = 24
    head_dim: int = 128
    text_dim: int = 4096  # T5 width (diffusers: joint_attention_dim)
    pooled_dim: int = 768  # CLIP pooled width (diffusers: pooled_projection_dim)
    axes_dims_rope: tuple = (16, 56, 56)  # RoPE channels per id axis; sums to head_dim
    mlp_ratio: int = 4
    timestep_channels: int = 256  # sinusoidal features of t and of the guidance value

    def __post_init__(self):
        if sum(self.axes_dims_rope) != self.head_dim:
            raise ValueError(f"axes_dims_rope {tuple(self.axes_dims_rope)} must sum to head_dim {self.head_dim}: "
                             "RoPE rotates every channel of a head, one block of channels per id axis")

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_dim(self) -> int:
        return self.mlp_ratio * self.dim

    @classmethod
    def from_diffusers(cls, config) -> "TransformerConfig":
        """From a diffusers FluxTransformer2DModel config (``transformer.config`` or its kwargs dict)."""
        config = dict(config)
        if not config.get("guidance_embeds", False):
            raise ValueError("this config has guidance_embeds=False (FLUX.1-schnell style); the series rebuilds "
                             "the guidance-distilled FLUX.1-dev / Kontext-dev transformer (guidance_embeds=True)")
        if config.get("patch_size", 1) != 1 or config.get("out_channels") not in (None, config.get("in_channels", 64)):
            raise ValueError("only patch_size=1 and out_channels=None (= in_channels), as in every FLUX.1 checkpoint")
        return cls(in_channels=config.get("in_channels", 64), num_double_blocks=config["num_layers"],
                   num_single_blocks=config["num_single_layers"], num_heads=config["num_attention_heads"],
                   head_dim=config["attention_head_dim"], text_dim=config["joint_attention_dim"],
                   pooled_dim=config["pooled_projection_dim"], axes_dims_rope=tuple(config["axes_dims_rope"]))


# ----------------------------------------------------------------------------------------------
# Small pure functions


def timestep_embedding(t: torch.Tensor, channels: int = 256, max_period: float = 10000) -> torch.Tensor:
    """[B] -> [B, channels]: cos(t * f_j) then sin(t * f_j), f_j = max_period ** (-j / (channels/2)).

    t is the timestep on the 0..1000 scale (or the guidance value times 1000): frequencies
    from 1 down to 1/max_period give every value a distinct, smooth fingerprint.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects one value per sample, shape [B]; got {tuple(t.shape)}")
    half = channels // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]  # [B, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # [B, channels]


def layer_norm(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over features, no learned scale or shift: AdaLN supplies them."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, with one (shift, scale) per sample: [B, L, D], [B, D], [B, D]."""
    return x * (1 + scale[:, None]) + shift[:, None]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, H*Dh] -> [B, H, L, Dh]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, Dh] -> [B, L, H*Dh]."""
    return x.transpose(1, 2).flatten(2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(Dh)) v, no mask. Returns the output [B, H, L, Dh] and the probabilities [B, H, L, L]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, L, L]
    probs = scores.softmax(dim=-1)
    return probs @ v, probs


# ----------------------------------------------------------------------------------------------
# Modules. Each knows its diffusers parameter names: diffusers_names() -> {ours: theirs}.


def _names(linears: dict[str, str] = None, norms: dict[str, str] = None) -> dict[str, str]:
    """Parameter-level names from module-level ones: a Linear has weight and bias, an RMSNorm a weight."""
    names = {}
    for ours, theirs in (linears or {}).items():
        names.update({f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"})
    for ours, theirs in (norms or {}).items():
        names[f"{ours}.weight"] = f"{theirs}.weight"
    return names


def _prefixed(prefix_ours: str, prefix_theirs: str, names: dict[str, str]) -> dict[str, str]:
    return {f"{prefix_ours}.{ours}": f"{prefix_theirs}.{theirs}" for ours, theirs in names.items()}


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the head channels: the QK norm."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class MLPEmbedder(nn.Module):
    """fc1 -> SiLU -> fc2: lifts a sinusoidal or pooled vector to the model width."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class Conditioning(nn.Module):
    """temb = MLP(sin-cos(t)) + MLP(sin-cos(guidance)) + MLP(pooled CLIP): one vector per sample."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.channels = config.timestep_channels
        self.time_in = MLPEmbedder(config.timestep_channels, config.dim)
        self.guidance_in = MLPEmbedder(config.timestep_channels, config.dim)
        self.pooled_in = MLPEmbedder(config.pooled_dim, config.dim)

    def forward(self, timestep: torch.Tensor, guidance: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """timestep, guidance: [B] on the 0..1000 scale; pooled: [B, pooled_dim] -> temb [B, dim]."""
        t = self.time_in(timestep_embedding(timestep, self.channels).to(pooled.dtype))
        g = self.guidance_in(timestep_embedding(guidance, self.channels).to(pooled.dtype))
        return t + g + self.pooled_in(pooled)

    @staticmethod
    def diffusers_names() -> dict[str, str]:  # relative to CombinedTimestepGuidanceTextProjEmbeddings
        return _names({"time_in.fc1": "timestep_embedder.linear_1", "time_in.fc2": "timestep_embedder.linear_2",
                       "guidance_in.fc1": "guidance_embedder.linear_1",
                       "guidance_in.fc2": "guidance_embedder.linear_2",
                       "pooled_in.fc1": "text_embedder.linear_1", "pooled_in.fc2": "text_embedder.linear_2"})


@dataclass
class Modulation:
    shift: torch.Tensor  # [B, dim]
    scale: torch.Tensor  # [B, dim]
    gate: torch.Tensor  # [B, dim]


class AdaLNModulation(nn.Module):
    """SiLU(temb) -> Linear(dim, 3 * n * dim) -> n Modulations (shift, scale, gate): the only door for temb."""

    def __init__(self, dim: int, num_sets: int):
        super().__init__()
        self.num_chunks = 3 * num_sets
        self.lin = nn.Linear(dim, self.num_chunks * dim)

    def forward(self, temb: torch.Tensor) -> list[Modulation]:
        chunks = self.lin(F.silu(temb)).chunk(self.num_chunks, dim=-1)  # [B, dim] each
        return [Modulation(*chunks[i:i + 3]) for i in range(0, self.num_chunks, 3)]


class QKVProjection(nn.Module):
    """One stream's q, k, v projections, the QK RMSNorms and (optionally) the output projection."""

    def __init__(self, config: TransformerConfig, with_out: bool = True):
        super().__init__()
        dim, self.num_heads = config.dim, config.num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_norm, self.k_norm = RMSNorm(config.head_dim), RMSNorm(config.head_dim)
        self.out = nn.Linear(dim, dim) if with_out else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, L, dim] -> q, k, v [B, H, L, Dh]; q and k RMS-normalised per head."""
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.q, self.k, self.v))
        return self.q_norm(q), self.k_norm(k), v


class MLP(nn.Module):
    """fc1 -> tanh-GELU -> fc2, dim -> 4 dim -> dim."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(config.dim, config.mlp_dim), nn.Linear(config.mlp_dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DoubleStreamBlock(nn.Module):
    """MMDiT block: two streams with their own weights, one joint attention over [text; image]."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.img_mod, self.txt_mod = AdaLNModulation(config.dim, 2), AdaLNModulation(config.dim, 2)
        self.img_attn, self.txt_attn = QKVProjection(config), QKVProjection(config)
        self.img_mlp, self.txt_mlp = MLP(config), MLP(config)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """img [B, Li, dim], txt [B, Lt, dim], temb [B, dim] -> new img, new txt, attention probs [B, H, L, L]."""
        img_attn_mod, img_mlp_mod = self.img_mod(temb)
        txt_attn_mod, txt_mlp_mod = self.txt_mod(temb)

        # Each stream normalises, modulates and projects itself ...
        img_q, img_k, img_v = self.img_attn(modulate(layer_norm(img), img_attn_mod.shift, img_attn_mod.scale))
        txt_q, txt_k, txt_v = self.txt_attn(modulate(layer_norm(txt), txt_attn_mod.shift, txt_attn_mod.scale))

        # ... then ONE attention over the concatenation: every token sees every token.
        q = apply_rope(torch.cat([txt_q, img_q], dim=2), *rope, sequence_dim=2)  # [B, H, Lt+Li, Dh]
        k = apply_rope(torch.cat([txt_k, img_k], dim=2), *rope, sequence_dim=2)
        v = torch.cat([txt_v, img_v], dim=2)
        out, probs = attention(q, k, v)
        out = merge_heads(out)  # [B, Lt+Li, dim]
        txt_out, img_out = out[:, : txt.shape[1]], out[:, txt.shape[1]:]

        # Gated residuals and per-stream MLPs
        img = img + img_attn_mod.gate[:, None] * self.img_attn.out(img_out)
        img = img + img_mlp_mod.gate[:, None] * self.img_mlp(modulate(layer_norm(img), img_mlp_mod.shift,
                                                                      img_mlp_mod.scale))
        txt = txt + txt_attn_mod.gate[:, None] * self.txt_attn.out(txt_out)
        txt = txt + txt_mlp_mod.gate[:, None] * self.txt_mlp(modulate(layer_norm(txt), txt_mlp_mod.shift,
                                                                      txt_mlp_mod.scale))
        return img, txt, probs

    @staticmethod
    def diffusers_names() -> dict[str, str]:  # relative to FluxTransformerBlock
        return _names(
            linears={"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
                     "img_attn.q": "attn.to_q", "img_attn.k": "attn.to_k", "img_attn.v": "attn.to_v",
                     "img_attn.out": "attn.to_out.0",
                     "txt_attn.q": "attn.add_q_proj", "txt_attn.k": "attn.add_k_proj", "txt_attn.v": "attn.add_v_proj",
                     "txt_attn.out": "attn.to_add_out",
                     "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2",
                     "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2"},
            norms={"img_attn.q_norm": "attn.norm_q", "img_attn.k_norm": "attn.norm_k",
                   "txt_attn.q_norm": "attn.norm_added_q", "txt_attn.k_norm": "attn.norm_added_k"})


class SingleStreamBlock(nn.Module):
    """One sequence [text; image]; attention and MLP read the same modulated input, in parallel."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.mod = AdaLNModulation(config.dim, 1)
        self.attn = QKVProjection(config, with_out=False)
        self.mlp_in = nn.Linear(config.dim, config.mlp_dim)
        self.out = nn.Linear(config.dim + config.mlp_dim, config.dim)  # attention output and MLP hidden, together

    def forward(self, x: torch.Tensor, temb: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, Lt+Li, dim] -> new x, attention probs [B, H, L, L]."""
        (mod,) = self.mod(temb)
        h = modulate(layer_norm(x), mod.shift, mod.scale)
        q, k, v = self.attn(h)
        attn_out, probs = attention(apply_rope(q, *rope, sequence_dim=2), apply_rope(k, *rope, sequence_dim=2), v)
        mlp_hidden = F.gelu(self.mlp_in(h), approximate="tanh")  # [B, L, 4 dim]
        both = torch.cat([merge_heads(attn_out), mlp_hidden], dim=-1)  # [B, L, 5 dim]
        return x + mod.gate[:, None] * self.out(both), probs

    @staticmethod
    def diffusers_names() -> dict[str, str]:  # relative to FluxSingleTransformerBlock
        return _names(linears={"mod.lin": "norm.linear", "attn.q": "attn.to_q", "attn.k": "attn.to_k",
                               "attn.v": "attn.to_v", "mlp_in": "proj_mlp", "out": "proj_out"},
                      norms={"attn.q_norm": "attn.norm_q", "attn.k_norm": "attn.norm_k"})


class FinalLayer(nn.Module):
    """AdaLN with (scale, shift) from temb, then a Linear back to the packed latent features."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.mod = nn.Linear(config.dim, 2 * config.dim)
        self.proj = nn.Linear(config.dim, config.in_channels)

    def modulated_norm(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # diffusers' AdaLayerNormContinuous splits (scale, shift); BFL's LastLayer splits (shift, scale).
        scale, shift = self.mod(F.silu(temb)).chunk(2, dim=-1)
        return modulate(layer_norm(x), shift, scale)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.proj(self.modulated_norm(x, temb))  # [B, Li, in_channels]

    @staticmethod
    def diffusers_names() -> dict[str, str]:  # relative to FluxTransformer2DModel
        return _names({"mod": "norm_out.linear", "proj": "proj_out"})


class KontextTransformer(nn.Module):
    """The whole FLUX.1 transformer: embed, 19 double blocks, 38 single blocks, output head."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.img_in = nn.Linear(config.in_channels, config.dim)
        self.txt_in = nn.Linear(config.text_dim, config.dim)
        self.conditioning = Conditioning(config)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.num_double_blocks))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(config) for _ in range(config.num_single_blocks))
        self.final = FinalLayer(config)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor, img_ids: torch.Tensor,
                txt_ids: torch.Tensor, guidance: torch.Tensor, return_attention: bool = False):
        """Same arguments as FluxTransformer2DModel.forward (timestep and guidance as the pipeline passes them).

        hidden_states [B, Li, 64] (target tokens, then context tokens), encoder_hidden_states
        [B, Lt, text_dim], pooled_projections [B, pooled_dim], timestep [B] = sigma (0..1),
        img_ids [Li, 3], txt_ids [Lt, 3], guidance [B]. Returns the velocity [B, Li, 64], and
        with ``return_attention`` also the attention probabilities of every block (double
        blocks first), each [B, H, Lt+Li, Lt+Li] over [text; image].
        """
        self._check_inputs(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
                           guidance)
        img = self.img_in(hidden_states)  # [B, Li, dim]
        txt = self.txt_in(encoder_hidden_states)  # [B, Lt, dim]
        dtype = img.dtype
        temb = self.conditioning(timestep.to(dtype) * 1000, guidance.to(dtype) * 1000, pooled_projections)  # [B, dim]
        rope = rope_tables(torch.cat([txt_ids, img_ids], dim=0), self.config.axes_dims_rope)  # [Lt+Li, Dh] x2

        all_probs = []
        for block in self.double_blocks:
            img, txt, probs = block(img, txt, temb, rope)
            all_probs.append(probs)
        x = torch.cat([txt, img], dim=1)  # [B, Lt+Li, dim]: from here on, one stream
        for block in self.single_blocks:
            x, probs = block(x, temb, rope)
            all_probs.append(probs)
        velocity = self.final(x[:, txt.shape[1]:], temb)  # text tokens are dropped: [B, Li, 64]
        return (velocity, all_probs) if return_attention else velocity

    def _check_inputs(self, img, txt, pooled, timestep, img_ids, txt_ids, guidance) -> None:
        cfg = self.config
        if guidance is None:
            raise ValueError("guidance is None, but FLUX.1-dev / Kontext-dev are guidance-distilled: pass one value "
                             "per sample, e.g. torch.full([batch], 2.5) (the pipeline's guidance_scale)")
        if img.ndim != 3 or img.shape[-1] != cfg.in_channels:
            raise ValueError(f"hidden_states has shape {tuple(img.shape)}; expected [batch, tokens, "
                             f"{cfg.in_channels}] (2x2-packed latents, target tokens then context tokens)")
        if txt.ndim != 3 or txt.shape[-1] != cfg.text_dim or txt.shape[0] != img.shape[0]:
            raise ValueError(f"encoder_hidden_states has shape {tuple(txt.shape)}; expected [{img.shape[0]}, "
                             f"text tokens, {cfg.text_dim}] (the T5 sequence)")
        for name, ids, tokens in (("img_ids", img_ids, img.shape[1]), ("txt_ids", txt_ids, txt.shape[1])):
            if ids.ndim != 2 or ids.shape != (tokens, 3):
                raise ValueError(f"{name} has shape {tuple(ids.shape)}; expected [{tokens}, 3], one (virtual time, "
                                 "row, col) id per token, shared by the batch (no batch dimension)")
        batch = img.shape[0]
        for name, value in (("timestep", timestep), ("guidance", guidance)):
            if value.shape != (batch,):
                raise ValueError(f"{name} has shape {tuple(value.shape)}; expected [{batch}], one value per sample")
        if pooled.shape != (batch, cfg.pooled_dim):
            raise ValueError(f"pooled_projections has shape {tuple(pooled.shape)}; expected [{batch}, "
                             f"{cfg.pooled_dim}] (CLIP pooler_output)")

    def diffusers_names(self) -> dict[str, str]:  # relative to FluxTransformer2DModel
        config = self.config
        names = _names({"img_in": "x_embedder", "txt_in": "context_embedder"})
        names.update(_prefixed("conditioning", "time_text_embed", Conditioning.diffusers_names()))
        for i in range(config.num_double_blocks):
            names.update(_prefixed(f"double_blocks.{i}", f"transformer_blocks.{i}", DoubleStreamBlock.diffusers_names()))
        for i in range(config.num_single_blocks):
            names.update(_prefixed(f"single_blocks.{i}", f"single_transformer_blocks.{i}",
                                   SingleStreamBlock.diffusers_names()))
        names.update({f"final.{ours}": theirs for ours, theirs in FinalLayer.diffusers_names().items()})
        return names

    @classmethod
    def from_diffusers(cls, transformer: nn.Module) -> "KontextTransformer":
        """A KontextTransformer with the weights of a diffusers FluxTransformer2DModel (same device, dtype)."""
        config = TransformerConfig.from_diffusers(transformer.config)
        parameter = next(transformer.parameters())
        with torch.device(parameter.device):
            model = cls(config).to(parameter.dtype)
        load_diffusers_weights(model, transformer.state_dict())
        return model.eval()


def modulation_linears(model: KontextTransformer) -> list[nn.Linear]:
    """Every Linear that reads temb: the AdaLN modulations of all blocks and of the output head."""
    return [module.lin for module in model.modules() if isinstance(module, AdaLNModulation)] + [model.final.mod]


# ----------------------------------------------------------------------------------------------
# Loading weights by explicit name map


def load_diffusers_weights(module: nn.Module, state_dict: dict, names: dict[str, str] | None = None) -> None:
    """Copy ``state_dict`` (diffusers names) into ``module`` (our names) through ``names`` = {ours: theirs}.

    ``names`` defaults to ``module.diffusers_names()``. Raises ValueError, listing the keys,
    if a diffusers key is missing, left over, or has another shape than ours.
    """
    if names is None:
        names = module.diffusers_names()
    ours = module.state_dict()
    if set(names) != set(ours):
        raise ValueError(f"name map and module disagree: {sorted(set(names) ^ set(ours))[:6]}")
    missing = [theirs for theirs in names.values() if theirs not in state_dict]
    unexpected = sorted(set(state_dict) - set(names.values()))
    if missing or unexpected:
        raise ValueError(
            f"the diffusers state dict does not fit this {type(module).__name__}: "
            f"{len(missing)} missing key(s) {missing[:4]}, {len(unexpected)} unexpected key(s) {unexpected[:4]}. "
            "Load the state dict of a FluxTransformer2DModel (or of the matching block) built with the same config "
            "(num_layers, num_single_layers, guidance_embeds=True); unfuse fused QKV projections and merge or "
            "unload LoRA adapters first.")
    wrong_shapes = [f"{theirs} {tuple(state_dict[theirs].shape)} -> {key} {tuple(ours[key].shape)}"
                    for key, theirs in names.items() if state_dict[theirs].shape != ours[key].shape]
    if wrong_shapes:
        raise ValueError(f"shapes differ (was the config read from the same checkpoint?): {wrong_shapes[:4]}")
    module.load_state_dict({key: state_dict[theirs] for key, theirs in names.items()}, strict=True)


# ----------------------------------------------------------------------------------------------
# The block diagram

STREAM_COLOURS = {"text": "#fde2c8", "image": "#dbe9f6", "joint": "#ead9f2", "temb": "#e3f1dc"}
GREEN, GREY = "#1a9641", "#555555"


def _box(ax, x, y, text, colour, width=2.6, height=0.62):
    ax.add_patch(plt.Rectangle((x - width / 2, y - height / 2), width, height, fc=colour, ec=GREY, zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=3)


def _arrow(ax, start, end, colour=GREY):
    ax.annotate("", xy=end, xytext=start, zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=1, shrinkA=0, shrinkB=0))


def _residual(ax, x_edge, x_out, y_from, y_to):
    """A dashed skip connection on the outside of a column, from one box's side to another's."""
    ax.plot([x_edge, x_out, x_out], [y_from, y_from, y_to], color=GREY, lw=1, ls="--", zorder=1)
    _arrow(ax, (x_out, y_to), (x_edge, y_to))


def _modulation_bus(ax, x, y_top, y_bottom, targets, left_label, right_label):
    """temb's path: a green line down the middle, short arrows into every modulated box."""
    ax.plot([x, x], [y_top, y_bottom], color=GREEN, lw=1.5, zorder=1)
    for target_x, target_y in targets:
        _arrow(ax, (x, target_y), (target_x, target_y), colour=GREEN)
    for label, dx, align in ((left_label, -0.1, "right"), (right_label, 0.1, "left")):
        ax.text(x + dx, y_top - 0.42, label, fontsize=7, color=GREEN, ha=align, va="center")


def _draw_double_block(ax):
    columns = {"text": 0.0, "image": 4.4}
    steps = [("T5 tokens", "image tokens [target; context]"),
             ("LayerNorm, ·(1+scale₁)+shift₁", "LayerNorm, ·(1+scale₁)+shift₁"),
             ("add_q/k/v_proj → RMSNorm q, k", "to_q/k/v → RMSNorm q, k"),
             None,  # the joint attention
             ("to_add_out, ·gate₁, +", "to_out.0, ·gate₁, +"),
             ("LayerNorm, ·(1+scale₂)+shift₂", "LayerNorm, ·(1+scale₂)+shift₂"),
             ("ff_context (GELU MLP)", "ff (GELU MLP)"),
             ("·gate₂, +", "·gate₂, +")]
    _box(ax, 2.2, 1.5, "temb = t + guidance + pooled CLIP", STREAM_COLOURS["temb"], width=3.6)
    modulated = [i for i, pair in enumerate(steps) if pair and ("shift" in pair[0] or "gate" in pair[0])]
    _modulation_bus(ax, 2.2, 1.19, -7, [(x + (1.3 if x < 2 else -1.3), -i) for i in modulated
                                        for x in columns.values()],
                    "norm1_context.linear → 6 vectors", "norm1.linear → 6 vectors")
    for i, pair in enumerate(steps):
        if pair is None:
            _box(ax, 2.2, -i, "concat [text; image] → RoPE(q, k)\none joint attention softmax(qkᵀ/√d)·v → split",
                 STREAM_COLOURS["joint"], width=7.0, height=0.72)
            continue
        for (stream, x), label in zip(columns.items(), pair):
            _box(ax, x, -i, label, STREAM_COLOURS[stream])
    for x in columns.values():
        for i in range(len(steps) - 1):
            top = -i - (0.36 if steps[i] is None else 0.31)
            bottom = -i - 1 + (0.36 if steps[i + 1] is None else 0.31)
            _arrow(ax, (x, top), (x, bottom))
        side = -1 if x < 2 else 1
        _residual(ax, x + side * 1.3, x + side * 1.75, 0, -4)
        _residual(ax, x + side * 1.3, x + side * 1.55, -4.15, -7)
    ax.text(-1.75, -2.0, "residual", rotation=90, fontsize=7, color=GREY, ha="right", va="center")
    ax.set_title("double-stream block (×19): own weights per stream, one attention", fontsize=10)


def _draw_single_block(ax):
    joint = STREAM_COLOURS["joint"]
    _box(ax, 2.2, 1.5, "temb", STREAM_COLOURS["temb"], width=1.4)
    _box(ax, 2.2, 0, "[text; image] as one sequence", joint, width=3.4)
    _box(ax, 2.2, -1, "LayerNorm, ·(1+scale)+shift", joint, width=3.4)
    _box(ax, 0.6, -2.5, "to_q/k/v → RMSNorm\n→ RoPE → attention", joint, width=2.8, height=0.9)
    _box(ax, 3.9, -2.5, "proj_mlp → GELU\n(dim → 4·dim)", joint, width=2.6, height=0.9)
    _box(ax, 2.2, -4, "concat → proj_out (5·dim → dim)", joint, width=3.6)
    _box(ax, 2.2, -5, "·gate, +", joint, width=3.4)
    _arrow(ax, (2.2, -0.31), (2.2, -0.69))
    for x in (0.6, 3.9):
        _arrow(ax, (2.2, -1.31), (x, -2.05))
        _arrow(ax, (x, -2.95), (2.2, -3.69))
    _arrow(ax, (2.2, -4.31), (2.2, -4.69))
    ax.plot([2.9, 5.6, 5.6], [1.5, 1.5, -5], color=GREEN, lw=1.5, zorder=1)
    for y, x_edge in ((-1, 3.9), (-5, 3.9)):
        _arrow(ax, (5.6, y), (x_edge, y), colour=GREEN)
    ax.text(5.7, 0.5, "norm.linear →\nshift, scale, gate", fontsize=7, color=GREEN, va="center")
    _residual(ax, 0.5, -1.0, 0, -5)
    ax.text(-1.05, -2.5, "residual", rotation=90, fontsize=7, color=GREY, ha="right", va="center")
    ax.text(2.2, -6.1, "after the last one: norm_out (AdaLN with scale, shift)\nand proj_out on the image tokens",
            fontsize=8, ha="center", va="center", style="italic")
    ax.set_title("single-stream block (×38): attention ∥ MLP", fontsize=10)


def draw_block_diagram():
    """The two block kinds side by side, with diffusers' module names on the boxes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.6), gridspec_kw=dict(width_ratios=[1.3, 1]))
    _draw_double_block(left)
    _draw_single_block(right)
    for ax, (xmin, xmax) in ((left, (-2.1, 6.5)), (right, (-1.6, 7.2))):
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(-7.5, 2.0)
        ax.axis("off")
    fig.tight_layout()
    return fig
