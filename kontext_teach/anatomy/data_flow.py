"""The data flow of one Kontext edit, with the shape at every arrow computed by running it.

``trace_edit`` runs each step with the real networks: the embedded miniature on real
tensors, or the full-size FLUX.1-Kontext-dev networks on the meta device (shapes only,
no memory). ``draw_data_flow`` draws the result as a diagram.
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..packing import pack_latents, unpack_latents
from ..position_ids import kontext_image_ids, text_ids
from ..schedule import shift_config, shifted_sigmas


@dataclass(frozen=True)
class Arrow:
    name: str  # what flows along the arrow
    shape: tuple  # its shape
    lane: str  # "image", "clip", "t5", "noise", "model" or "output"


def _tokens(tokenizer, prompts: list[str], length: int, device) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    return ids.to(device)


@torch.no_grad()
def trace_edit(components: dict, *, height: int, width: int, image_height: int | None = None,
               image_width: int | None = None, prompt: str = "make the circle blue", batch_size: int = 1,
               num_steps: int = 28, max_sequence_length: int = 512, device: str | torch.device = "cpu") -> list[Arrow]:
    """Run one edit's steps (one transformer call) and record the shape of every intermediate."""
    vae, transformer = components["vae"], components["transformer"]
    image_height, image_width = image_height or height, image_width or width
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    dtype = next(transformer.parameters()).dtype
    arrows = []

    def record(name, tensor_or_shape, lane):
        shape = tuple(tensor_or_shape.shape) if torch.is_tensor(tensor_or_shape) else tuple(tensor_or_shape)
        arrows.append(Arrow(name, shape, lane))

    # Condition image -> VAE posterior mode -> shift/scale -> 2x2 pack -> ids (first coordinate 1)
    image = torch.zeros(batch_size, 3, image_height, image_width, device=device, dtype=dtype)
    record("condition image", image, "image")
    latents = vae.encode(image).latent_dist.mode()
    record("VAE latent (mode)", latents, "image")
    latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    context_tokens = pack_latents(latents)
    record("context tokens", context_tokens, "image")

    # Prompt -> CLIP pooled vector and T5 sequence; text ids are zeros
    prompts = [prompt] * batch_size
    clip_ids = _tokens(components["tokenizer"], prompts, components["tokenizer"].model_max_length, device)
    record("CLIP token ids", clip_ids, "clip")
    pooled = components["text_encoder"](clip_ids).pooler_output
    record("pooled CLIP", pooled, "clip")
    t5_ids = _tokens(components["tokenizer_2"], prompts, max_sequence_length, device)
    record("T5 token ids", t5_ids, "t5")
    t5_states = components["text_encoder_2"](t5_ids)[0]
    record("T5 states", t5_states, "t5")
    record("text ids", text_ids(t5_states.shape[1]), "t5")

    # Noise -> target tokens; ids (0, row, col) then context ids (1, row, col)
    latent_h, latent_w = 2 * (height // (down * 2)), 2 * (width // (down * 2))
    noise = torch.randn(batch_size, vae.config.latent_channels, latent_h, latent_w, device=device, dtype=dtype)
    target_tokens = pack_latents(noise)
    record("noise tokens", target_tokens, "noise")
    ids = kontext_image_ids((latent_h // 2, latent_w // 2), (latents.shape[2] // 2, latents.shape[3] // 2))
    record("image ids", ids, "noise")
    scheduler = components.get("scheduler")  # its shift constants, as the pipeline reads them (FLUX's if absent)
    constants = shift_config(scheduler.config) if scheduler is not None else {}
    record("sigmas", shifted_sigmas(num_steps, target_tokens.shape[1], **constants), "noise")

    # One transformer call on [target; context] tokens; keep the target part
    hidden = torch.cat([target_tokens, context_tokens], dim=1)
    record("transformer input", hidden, "model")
    step = torch.ones(batch_size, device=device, dtype=dtype)
    velocity = transformer(hidden_states=hidden, timestep=step, guidance=step, pooled_projections=pooled,
                           encoder_hidden_states=t5_states, txt_ids=text_ids(t5_states.shape[1]).to(device),
                           img_ids=ids.to(device), return_dict=False)[0]
    record("transformer output", velocity, "model")
    velocity = velocity[:, : target_tokens.shape[1]]
    record("velocity (target)", velocity, "model")

    # After the loop: unpack -> unscale -> decode
    final = unpack_latents(target_tokens, latent_h, latent_w)
    record("unpacked latent", final, "output")
    decoded = vae.decode(final / vae.config.scaling_factor + vae.config.shift_factor).sample
    record("edited image", decoded, "output")
    return arrows


INPUT_LANES = ("image", "clip", "t5", "noise")
LANE_COLUMNS = {"image": 0, "clip": 1, "t5": 2, "noise": 3, "model": 1.5, "output": 1.5}
LANE_COLOURS = {"image": "#dbe9f6", "clip": "#fde2c8", "t5": "#fde2c8", "noise": "#e3f1dc",
                "model": "#ead9f2", "output": "#f2f2f2"}


def _layout(arrows: list[Arrow]) -> dict[str, tuple[float, float]]:
    """Box positions: three input lanes side by side, then the model and output lanes below."""
    positions, depth = {}, {}
    inputs_end = max(sum(a.lane == lane for a in arrows) for lane in INPUT_LANES)
    for arrow in arrows:
        column = LANE_COLUMNS[arrow.lane]
        start = 0 if arrow.lane in INPUT_LANES else inputs_end + (arrow.lane == "output") * 3
        row = start + depth.get(arrow.lane, 0)
        depth[arrow.lane] = depth.get(arrow.lane, 0) + 1
        positions[arrow.name] = (column * 2.9, -row * 1.0)
    return positions


def draw_data_flow(arrows: list[Arrow], title: str, ax=None):
    """Boxes with the name and shape of everything that flows, arrows between consecutive steps."""
    positions = _layout(arrows)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.62 * (max(-y for _, y in positions.values()) + 2)))
    for arrow in arrows:
        x, y = positions[arrow.name]
        ax.text(x, y, f"{arrow.name}\n{list(arrow.shape)}", ha="center", va="center", fontsize=8.5,
                bbox=dict(boxstyle="round,pad=0.35", fc=LANE_COLOURS[arrow.lane], ec="#555555"))
    links = [(a.name, b.name) for a, b in zip(arrows, arrows[1:]) if a.lane == b.lane]
    ends = {lane: [a.name for a in arrows if a.lane == lane][-1] for lane in INPUT_LANES}
    first_model = next(a.name for a in arrows if a.lane == "model")
    links += [(ends[lane], first_model) for lane in ends]
    links.append(([a.name for a in arrows if a.lane == "model"][-1], next(a.name for a in arrows if a.lane == "output")))
    for start, end in links:
        (x0, y0), (x1, y1) = positions[start], positions[end]
        ax.annotate("", xy=(x1, y1 + 0.33), xytext=(x0, y0 - 0.33),
                    arrowprops=dict(arrowstyle="->", color="#555555", lw=1))
    model_names = [a.name for a in arrows if a.lane == "model"]
    (x_top, y_top), (_, y_bottom) = positions[model_names[0]], positions[model_names[-1]]
    ax.annotate("", xy=(x_top + 1.3, y_top), xytext=(x_top + 1.3, y_bottom),
                arrowprops=dict(arrowstyle="->", color="#7b3294", lw=1.5, connectionstyle="arc3,rad=0.5"))
    ax.text(x_top + 2.0, (y_top + y_bottom) / 2, "once per sigma:\nx += (σ_next − σ) · v", fontsize=8.5,
            color="#7b3294", va="center")
    ax.set_title(title, fontsize=11)
    ax.set_xlim(-1.6, 10.3)
    ys = [y for _, y in positions.values()]
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    return ax
