"""kontext_teach: FLUX.1 Kontext rebuilt step by step, each step checked against diffusers.

One module per concept, in the order of the notebook series:

* ``loading``      - load_pipeline(): the embedded miniature, a local folder or a hub id
* ``harness``      - setup() and compare(), used by every notebook
* ``miniature`` / ``full_size`` - configs of the embedded model and of FLUX.1-Kontext-dev
* ``data_flow``    - the shapes at every arrow of an edit, computed, never typed
* ``packing``, ``position_ids``, ``schedule`` - the steps between VAE and transformer
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
