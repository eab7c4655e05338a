"""The toy world and the embedded miniature Kontext that is trained on it.

* ``toy_world``      - seed -> (source image, instruction, target image, scene descriptions); scene
                       styles (``WIDE_STYLE``: a training augmentation)
* ``edit_metric``    - did the edit happen? a metric read off the toy scenes
* ``prompt_corpus``  - the sentences the miniature's T5 tokenizer is trained on
* ``miniature``      - configs of the miniature (the real diffusers/transformers classes, tiny)
* ``build_embedded`` - the untrained miniature: tokenizers and seeded weights
                       (``python -m kontext_teach build-embedded``)
* ``mini_training``  - train it on the toy world: VAE, CFG teacher, guidance-distilled student
                       (``python -m kontext_teach mini-training``; notebook A1)
* ``context_heads``  - training-only linear heads on the context tokens (hooks, detached before saving)
* ``grounding``      - a training-only probe: which context tokens does the edit change? (an auxiliary
                       loss, ``mini-training --grounding-weight``)
* ``perception``     - a training-only probe: which kind of shape covers each context token?
                       (``mini-training --perception-weight``)
* ``guidance``       - CFG, the distilled student against its teacher, what the guidance value does
* ``drawn_scenes``   - a second renderer (PIL ImageDraw) whose scenes the training never saw
* ``shape_probe``    - does the VAE keep which shape is which, and the transformer's tokens, block by
                       block? (``python -m kontext_teach.toy.shape_probe MODEL/vae [--transformer ...]``)
* ``miniature_report`` - measure a trained miniature; writes ``evaluation.json`` beside its weights
* ``lora_experiments`` - which reserved edit a short LoRA run learns, with which recipe: the table
                       of notebook 09 (``python -m kontext_teach.toy.lora_experiments``)
* ``shipped_lora``   - the flip LoRA that ships with the miniature: its recipe, the command that
                       trains it, its measurements (``python -m kontext_teach.toy.shipped_lora build``)
* ``embedded_loras/`` - that LoRA: ``flip_upside_down/`` in diffusers' format, with its training record
* ``embedded_model/`` - the shipped, trained miniature: a diffusers ``FluxKontextPipeline`` folder
                       (the student in ``transformer/``, its CFG teacher in ``teacher_transformer/``)

May import the pipeline step modules, ``lab`` and ``training``; the step modules never import from here.
"""
