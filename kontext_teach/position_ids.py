"""Position ids for FLUX's 3-axis RoPE: (virtual time, row, column) per token.

Target (noisy) tokens get (0, row, col); Kontext's context-image tokens get the same grid
with the first coordinate set to 1; the T5 text tokens get (0, 0, 0).
"""

import torch

TARGET_INDEX = 0
CONTEXT_INDEX = 1


def latent_grid_ids(grid_height: int, grid_width: int, first_index: int = TARGET_INDEX) -> torch.Tensor:
    """[grid_height * grid_width, 3] ids (first_index, row, col), row-major like pack_latents."""
    rows = torch.arange(grid_height).repeat_interleave(grid_width)  # 0,0,...,1,1,...
    cols = torch.arange(grid_width).repeat(grid_height)  # 0,1,...,0,1,...
    first = torch.full_like(rows, first_index)
    return torch.stack([first, rows, cols], dim=-1).float()


def text_ids(num_tokens: int) -> torch.Tensor:
    """[num_tokens, 3] zeros: RoPE at angle 0, the identity, on every text token."""
    return torch.zeros(num_tokens, 3)


def kontext_image_ids(target_grid: tuple[int, int], context_grid: tuple[int, int]) -> torch.Tensor:
    """Target ids then context ids, concatenated along the sequence: [Lt + Lc, 3]."""
    return torch.cat([latent_grid_ids(*target_grid, TARGET_INDEX),
                      latent_grid_ids(*context_grid, CONTEXT_INDEX)], dim=0)
