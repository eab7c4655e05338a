"""An auxiliary grounding loss for training the miniature: "which tokens does this edit change?"

The velocity loss rewards editing the *named* shape only weakly: at high noise most of its
error is the unpredictable noise, and a recolour of the wrong shape costs a few tokens' worth of
MSE. A grounding probe asks the question directly. A linear head reads the transformer's last
hidden states of the *context* tokens (the clean input picture; their outputs are sliced off
before the velocity, so nothing else uses them) and predicts, per token, whether the edit changes
that place. Binary cross-entropy on that mask pushes the trunk to find the shape the instruction
names, in the picture it can see clearly.

The head is training-only: it is attached with a forward pre-hook on ``norm_out`` (a public
``torch.nn.Module`` hook; ``norm_out`` receives the image tokens' hidden states, [B, Lt + Lc, D])
and removed afterwards, so the saved transformer is a plain ``FluxTransformer2DModel``.
"""

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel


class GroundingProbe(torch.nn.Module):
    """A per-token linear head on the context tokens' last hidden states; ``attach`` starts capturing them."""

    def __init__(self, transformer: FluxTransformer2DModel):
        super().__init__()
        self.head = torch.nn.Linear(transformer.config.num_attention_heads * transformer.config.attention_head_dim, 1)
        self._hidden = None
        self._handle = None
        self._transformer = [transformer]  # a list, so that the probe's parameters() leave the transformer out

    def attach(self) -> "GroundingProbe":
        def capture(module, args):
            self._hidden = args[0]  # [B, Lt + Lc, D]: target tokens, then context tokens
        self._handle = self._transformer[0].norm_out.register_forward_pre_hook(capture)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._hidden = None, None

    def logits(self, context_tokens: int) -> torch.Tensor:
        """[B, Lc] grounding logits of the last forward pass's context tokens."""
        if self._hidden is None:
            raise RuntimeError("run the transformer after attach() before asking for the grounding logits")
        return self.head(self._hidden[:, -context_tokens:].float()).squeeze(-1)  # [B, Lc]

    def loss(self, changed: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mean BCE between the last forward's context logits and `changed` [B, Lc] (bool: the edit changes that
        token); `keep` [B] (bool) leaves out samples without their instruction (prompt dropout). 0 if none kept."""
        logits = self.logits(changed.shape[1])
        per_sample = F.binary_cross_entropy_with_logits(logits, changed.float(), reduction="none").mean(dim=1)  # [B]
        if keep is None:
            return per_sample.mean()
        return (per_sample * keep.float()).sum() / keep.float().sum().clamp(min=1.0)
