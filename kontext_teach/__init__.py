"""kontext_teach: FLUX.1 Kontext rebuilt step by step, each step checked against diffusers.

The top level is the pipeline, one module per step, in the order of the notebooks:

* ``preprocessing``   - which sizes the pipeline uses, the condition image's tensor (01)
* ``prompt_encoding`` - prompt -> T5 states, pooled CLIP vector, text ids (02)
* ``vae_latents``     - image <-> 16-channel latents: posterior mode, shift and scale (03)
* ``packing``         - 2x2 packing latents <-> tokens (04)
* ``position_ids``    - (virtual time, row, col) ids and token_grid, the one token count (05)
* ``rope``            - 3-axis rotary position embedding (05)
* ``schedule``        - sigmas, the resolution shift mu, timesteps, the Euler step (06)
* ``transformer``     - the FLUX transformer from scratch, loading diffusers weights (07)
* ``sampling``        - the denoising loop of an edit, bit-exact with the pipeline (08)

The machinery lives in its own rooms, as diffusers keeps ``models/``, ``pipelines/`` and
``schedulers/`` apart:

* ``anatomy/``   - what the pipeline costs and what it sees: shapes, full-size configs, FLOPs, attention maps
* ``training/``  - the Kontext objective, noise-level densities, pair folders, the LoRA trainer and benchmark
* ``toy/``       - the toy editing world, its metric, and the miniature's recipe and shipped weights
* ``lab/``       - setup(), compare(), load_pipeline() and the map of the series
* ``solutions/`` - the exercises' solutions, one module per notebook

Step modules import only each other and the libraries, never the rooms (tests/test_layout.py
checks it); the rooms may import the steps. Command lines: ``python -m kontext_teach --help``.
"""

import importlib
import os

# Importing diffusers' Flux pipelines makes transformers say, on stderr, that torchvision is absent
# (the series does not need it). Notebooks must not write to stderr, so the library starts quiet;
# set TRANSFORMERS_VERBOSITY yourself to hear it. kt.setup() silences the rest.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"
STEPS = ("preprocessing", "prompt_encoding", "vae_latents", "packing", "position_ids", "rope", "schedule",
         "transformer", "sampling")
_LAB = {"compare": "harness", "setup": "harness", "ModelSourceError": "loading", "load_pipeline": "loading",
        "load_lora": "loading"}
__all__ = [*_LAB, *STEPS]


def __getattr__(name: str):
    """Import on first use (PEP 562): `import kontext_teach` stays instant, so command lines answer --help
    at once; `kt.load_pipeline`, `kt.setup`, `kt.compare` and the step modules (`kt.packing`) load when used."""
    if name in _LAB:
        return getattr(importlib.import_module(f".lab.{_LAB[name]}", __name__), name)
    if name in STEPS or name in ("anatomy", "training", "toy", "lab", "solutions"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kontext_teach' has no attribute {name!r}")
