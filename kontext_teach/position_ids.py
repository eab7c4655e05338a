"""Position ids for FLUX's 3-axis RoPE: (virtual time, row, column) per token.

Target (noisy) tokens get (0, row, col); Kontext's context-image tokens get the same grid
with the first coordinate set to 1; the T5 text tokens get (0, 0, 0). Inside the
transformer the ids are concatenated as [text; target; context], the order of the tokens.
"""

import operator

import torch

VAE_SCALE_FACTOR = 8  # image pixels per latent pixel side
PATCH = 2  # latent pixels per token side (2x2 packing)
TARGET_INDEX = 0
CONTEXT_INDEX = 1
ID_AXES = ("virtual time", "row", "column")


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        try:
            whole = operator.index(value)  # int, numpy and torch integers; not 2.5
        except TypeError:
            whole = None
        if isinstance(value, bool) or whole is None or whole < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}; a token grid has at least one row "
                             "and one column (image sides of at least 16 px)")


def token_grid(height: int, width: int, vae_scale_factor: int = VAE_SCALE_FACTOR) -> tuple[int, int]:
    """(rows, cols) of packed tokens for an image of height x width pixels, floored like the pipeline.

    One token covers vae_scale_factor * 2 pixels per side (8 for the VAE x 2 for the 2x2 packing).
    The one place the series counts tokens: packing, preprocessing and schedule call it.
    """
    patch = vae_scale_factor * PATCH
    if height < patch or width < patch:
        raise ValueError(f"an image of {height}x{width} px has no full {patch}x{patch} px patch; "
                         f"make both sides at least {patch} px (ideally multiples of {patch})")
    return height // patch, width // patch


def latent_grid_ids(grid_height: int, grid_width: int, first_index: int = TARGET_INDEX) -> torch.Tensor:
    """[grid_height * grid_width, 3] ids (first_index, row, col), row-major like pack_latents."""
    _check_positive(grid_height=grid_height, grid_width=grid_width)
    rows = torch.arange(grid_height).repeat_interleave(grid_width)  # 0,0,...,1,1,...
    cols = torch.arange(grid_width).repeat(grid_height)  # 0,1,...,0,1,...
    first = torch.full_like(rows, first_index)
    return torch.stack([first, rows, cols], dim=-1).float()  # [H*W, 3]


def text_ids(num_tokens: int) -> torch.Tensor:
    """[num_tokens, 3] zeros: RoPE at angle 0, the identity, on every text token."""
    _check_positive(num_tokens=num_tokens)
    return torch.zeros(num_tokens, 3)


def kontext_image_ids(target_grid: tuple[int, int], context_grid: tuple[int, int],
                      context_index: int = CONTEXT_INDEX) -> torch.Tensor:
    """Target ids then context ids, concatenated along the sequence: [Lt + Lc, 3]."""
    return torch.cat([latent_grid_ids(*target_grid, TARGET_INDEX),
                      latent_grid_ids(*context_grid, context_index)], dim=0)


def transformer_ids(num_text_tokens: int, target_grid: tuple[int, int], context_grid: tuple[int, int]) -> torch.Tensor:
    """[T + Lt + Lc, 3]: the ids FluxPosEmbed receives inside the transformer, text first."""
    return torch.cat([text_ids(num_text_tokens), kontext_image_ids(target_grid, context_grid)], dim=0)


def ids_as_planes(ids: torch.Tensor, grid_height: int, grid_width: int) -> torch.Tensor:
    """[H*W, 3] ids of one image -> [3, H, W]: one picture per coordinate (first, row, col)."""
    if ids.ndim != 2 or ids.shape != (grid_height * grid_width, 3):
        raise ValueError(f"expected the [{grid_height * grid_width}, 3] ids of one {grid_height}x{grid_width} "
                         f"grid, got shape {tuple(ids.shape)}; slice the target or context part out first")
    return ids.T.reshape(3, grid_height, grid_width)  # [3, H, W]
