"""kontext_teach: FLUX.1 Kontext rebuilt step by step, each step checked against diffusers.

One module per concept, in the order of the notebook series (the notebooks that use it in brackets):

Shared
* ``harness``           - setup() and compare(), used by every notebook
* ``loading``           - load_pipeline(): the embedded miniature, a local folder or a hub id
* ``miniature``         - configs of the embedded miniature Kontext (``embedded_model/``)
* ``full_size``         - configs of FLUX.1-Kontext-dev and its networks on the meta device
* ``series``            - the map of the series, one line per notebook
* ``solutions``         - the exercises' solutions, one module per notebook

00-06: from inputs to transformer tokens
* ``data_flow``         - the shapes at every arrow of an edit, computed, never typed (00)
* ``preprocessing``     - which sizes the pipeline uses, the condition image's tensor (01)
* ``prompt_encoding``   - prompt -> T5 states, pooled CLIP vector, text ids (02)
* ``vae_latents``       - image <-> 16-channel latents: posterior mode, shift and scale (03)
* ``packing``           - 2x2 packing latents <-> tokens, sequence lengths and their cost (04)
* ``position_ids``      - (virtual time, row, col) ids and token_grid, the one token count (05)
* ``rope``              - 3-axis rotary position embedding from scratch (05)
* ``schedule``          - sigmas, the resolution shift mu, timesteps, the Euler step (06)
* ``timestep_sampling`` - training noise-level densities and loss weightings (06)

07-08: the transformer and the denoising loop
* ``transformer``       - the FLUX transformer from scratch, loading diffusers weights (07)
* ``attention_maps``    - where a target token looks in [text; target; context] (07)
* ``transformer_costs`` - parameters, FLOPs of one step and LoRA target names (07)
* ``sampling``          - the denoising loop of an edit by hand, bit-exact with the pipeline (08)
* ``toy_world``         - the toy editing world: seed -> (source, instruction, target) (08, 09, A1)
* ``edit_metric``       - did the edit happen? a metric read off the toy scenes (08, 09, A1)

09 and appendix: training
* ``edit_pairs``        - dataset folders of (condition, instruction, target) pairs (09)
* ``kontext_objective`` - the flow-matching loss on [noisy target; clean context] tokens (09)
* ``lora_training``     - a Kontext LoRA trainer written to be read (09)
* ``train``             - the LoRA trainer's command line (09)
* ``bench``             - speed of one LoRA training step, reference set-up against ours
* ``prompt_corpus``     - the prompt corpus the miniature's T5 tokenizer is trained on
* ``build_embedded``    - build the untrained miniature: tokenizers and seeded weights
* ``mini_training``     - train the miniature on the toy world, VAE then transformer (A1)
"""

from transformers.utils import logging as _transformers_logging

# Importing diffusers' Flux pipelines makes transformers warn once, on stderr, that
# torchvision is absent (the series does not need it). Keep that import quiet.
_verbosity = _transformers_logging.get_verbosity()
_transformers_logging.set_verbosity_error()
try:
    from .harness import compare, setup
    from .loading import ModelSourceError, load_pipeline
finally:
    _transformers_logging.set_verbosity(_verbosity)

__version__ = "0.1.0"
__all__ = ["ModelSourceError", "compare", "load_pipeline", "setup"]
