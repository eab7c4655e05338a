"""An auxiliary grounding loss for training the miniature: "which tokens does this edit change?"

The velocity loss rewards editing the *named* shape only weakly: at high noise most of its
error is the unpredictable noise, and a recolour of the wrong shape costs a few tokens' worth of
MSE. A grounding probe asks the question directly. A linear head reads the transformer's last
hidden states of the *context* tokens (the clean input picture; their outputs are sliced off
before the velocity, so nothing else uses them) and predicts, per token, whether the edit changes
that place. Binary cross-entropy on that mask pushes the trunk to find the shape the instruction
names, in the picture it can see clearly.

The head is training-only (``context_heads.ContextHead``): a forward pre-hook on ``norm_out``, which
receives the image tokens' hidden states [B, Lt + Lc, D], captures them; it is removed before saving.
"""

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel

from .context_heads import ContextHead


class GroundingProbe(ContextHead):
    """A per-token linear head on the context tokens' last hidden states; ``attach`` starts capturing them."""

    def __init__(self, transformer: FluxTransformer2DModel):
        super().__init__(transformer, transformer.norm_out, outputs=1, pre_hook=True)

    def logits(self, context_tokens: int) -> torch.Tensor:
        """[B, Lc] grounding logits of the last forward pass's context tokens."""
        return self.context_outputs(context_tokens).squeeze(-1)

    def loss(self, changed: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mean BCE between the last forward's context logits and `changed` [B, Lc] (bool: the edit changes that
        token); `keep` [B] (bool) leaves out samples without their instruction (prompt dropout). 0 if none kept."""
        logits = self.logits(changed.shape[1])
        per_sample = F.binary_cross_entropy_with_logits(logits, changed.float(), reduction="none").mean(dim=1)  # [B]
        if keep is None:
            return per_sample.mean()
        return (per_sample * keep.float()).sum() / keep.float().sum().clamp(min=1.0)
