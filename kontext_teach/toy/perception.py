"""An auxiliary perception loss for training the miniature: "what kind of shape is under this token?"

A linear probe on the shipped teacher's hidden states tells a circle's context tokens from a
square's barely better than chance, although a small classifier on the VAE latents around a shape
tells them apart almost always (``shape_probe``). The transformer could see the difference and has
not learned to: the velocity loss pays for it only when an instruction names one of two look-alikes.

This probe pays for it on every sample. A linear head reads the context tokens' hidden states after
one transformer block and predicts, per token, how much of its 16 x 16 pixels is background, circle,
square or triangle (a soft cross-entropy against the true shares). A *linear* head asks for features
that the joint attention can match with the instruction's shape word by a dot product.

Like ``grounding.GroundingProbe``, the head is training-only (``context_heads.ContextHead``): a forward
hook on the chosen block captures its image-stream output, and is removed before saving.
"""

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel

from . import toy_world
from .context_heads import ContextHead

CLASSES = ("background", *toy_world.KINDS)


def kind_shares(scene: toy_world.Scene, grid: tuple[int, int]) -> torch.Tensor:
    """[rows * cols, 4] share of each packed token's pixels that is background, circle, square, triangle.

    Shapes never overlap in the toy world, so the shares of a token sum to 1."""
    rows, cols = grid
    size = scene.size
    shares = np.zeros((len(CLASSES), rows, cols), np.float32)
    for shape in scene.shapes:
        covered = toy_world.coverage(shape, size)  # [size, size]
        shares[CLASSES.index(shape.kind)] += covered.reshape(rows, size // rows, cols, size // cols).mean(axis=(1, 3))
    shares[0] = np.clip(1.0 - shares[1:].sum(axis=0), 0.0, 1.0)
    return torch.from_numpy(shares.reshape(len(CLASSES), -1).T.copy())  # [L, 4]


class KindProbe(ContextHead):
    """A per-token linear head on the context tokens' image-stream output of one block."""

    def __init__(self, transformer: FluxTransformer2DModel, block: int = 1):
        blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
        if not -len(blocks) <= block < len(blocks):
            raise ValueError(f"block {block} does not exist: the transformer has {len(blocks)} blocks "
                             f"(double-stream first, then single-stream)")
        super().__init__(transformer, blocks[block], outputs=len(CLASSES), pre_hook=False)

    def logits(self, context_tokens: int) -> torch.Tensor:
        """[B, Lc, 4] class logits of the last forward pass's context tokens."""
        return self.context_outputs(context_tokens)

    def loss(self, shares: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy between the last forward's context logits and the true shares [B, Lc, 4]."""
        log_p = F.log_softmax(self.logits(shares.shape[1]), dim=-1)  # [B, Lc, 4]
        return -(shares * log_p).sum(dim=-1).mean()
