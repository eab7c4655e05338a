"""Training-only heads on the transformer's context tokens: the machinery of the auxiliary losses.

The context tokens are the clean input picture; their outputs are sliced off before the velocity,
so a head may ask them questions without touching what the pipeline computes. A head captures the
image-stream hidden states [B, Lt + Lc, D] with a public torch hook on one module, reads the last Lc
(the context), and is detached before saving, so the saved transformer is a plain
``FluxTransformer2DModel``. ``grounding`` and ``perception`` ask the questions.
"""

import torch
from diffusers import FluxTransformer2DModel


class ContextHead(torch.nn.Module):
    """A per-token linear head (hidden width -> `outputs`) on the context tokens seen by `module`: its input
    (``pre_hook=True``, e.g. ``norm_out``) or its image-stream output (a FLUX block returns (text, image))."""

    def __init__(self, transformer: FluxTransformer2DModel, module: torch.nn.Module, outputs: int, pre_hook: bool):
        super().__init__()
        width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.head = torch.nn.Linear(width, outputs)
        self._module = [module]  # a list keeps the transformer's parameters out of the head's parameters()
        self._pre_hook = pre_hook
        self._hidden = None
        self._handle = None

    def attach(self) -> "ContextHead":
        module = self._module[0]
        if self._pre_hook:
            self._handle = module.register_forward_pre_hook(lambda m, args: setattr(self, "_hidden", args[0]))
        else:
            self._handle = module.register_forward_hook(lambda m, args, out: setattr(self, "_hidden", out[1]))
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._hidden = None, None

    def context_outputs(self, context_tokens: int) -> torch.Tensor:
        """[B, Lc, outputs] the head on the last forward pass's context tokens."""
        if self._hidden is None:
            raise RuntimeError("run the transformer after attach() before asking the head")
        return self.head(self._hidden[:, -context_tokens:].float())
