"""Solutions to the exercises of 05_position_ids_rope."""

import torch

from ..position_ids import TARGET_INDEX, latent_grid_ids
from ..rope import THETA, check_axes, rope_angles, run_transformer


def apply_rope_complex(x: torch.Tensor, ids: torch.Tensor, axes_dims, theta: float = THETA) -> torch.Tensor:
    """Exercise 1: RoPE with complex numbers. Each channel pair (a, b) is the complex number
    a + ib, and rotating it by the angle phi is a multiplication by e^(i phi).

    x: [B, S, H, D] queries or keys; ids: [S, n_axes]. Returns x rotated, like apply_rope.
    """
    check_axes(axes_dims, num_axes=ids.shape[1], head_dim=x.shape[-1])
    angles = torch.cat([rope_angles(ids[:, axis], dim, theta) for axis, dim in enumerate(axes_dims)],
                       dim=-1)  # [S, D/2]
    rotation = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # e^(i angle): [S, D/2]
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # [B, S, H, D/2]
    rotated = pairs * rotation[:, None, :]  # the same rotation for every head
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)  # [B, S, H, D]


def multi_context_ids(target_grid: tuple[int, int], context_grids: list[tuple[int, int]]) -> torch.Tensor:
    """Exercise 2: ids for several context images, as the Kontext paper describes them: the
    target at first coordinate 0, the i-th context image (counting from 1) at first coordinate i.

    Returns [Lt + sum(Lc_i), 3], target first, then the context images in order.
    """
    if not context_grids:
        raise ValueError("give at least one context grid; with none, the ids are latent_grid_ids(*target_grid)")
    blocks = [latent_grid_ids(*target_grid, TARGET_INDEX)]
    blocks += [latent_grid_ids(*grid, index) for index, grid in enumerate(context_grids, start=1)]
    return torch.cat(blocks, dim=0)


def output_with_shifted_ids(transformer, inputs: dict, shift, *, shift_text: bool = True) -> torch.Tensor:
    """Exercise 3: run the transformer with every image id (and, if shift_text, every text id)
    moved by the same vector ``shift`` of three numbers. Returns the output [B, L, 64].
    """
    shift = torch.as_tensor(shift, dtype=inputs["img_ids"].dtype)
    if shift.shape != (inputs["img_ids"].shape[1],):
        raise ValueError(f"shift must have one number per id coordinate ({inputs['img_ids'].shape[1]}), "
                         f"got shape {tuple(shift.shape)}")
    overrides = {"img_ids": inputs["img_ids"] + shift}
    if shift_text:
        overrides["txt_ids"] = inputs["txt_ids"] + shift
    return run_transformer(transformer, inputs, **overrides)
