"""Training: the Kontext objective and a LoRA trainer written to be read.

* ``timestep_sampling`` - where training puts its noise levels: densities and loss weightings (06, 09)
* ``kontext_objective`` - the flow-matching loss on [noisy target; clean context] tokens (09)
* ``edit_pairs``        - dataset folders of (condition, instruction, target) pairs (09)
* ``recipes``           - TrainConfig, the LoRA layer sets and the presets per model size (no torch)
* ``lora_training``     - the LoRA trainer: caching, peft adapters, checkpoints, exact resume (09)
* ``train``             - its command line: ``python -m kontext_teach train --help``
* ``bench``             - one LoRA step at full size, the reference set-up against ours:
                          ``python -m kontext_teach bench``

May import the pipeline step modules and ``lab``; the step modules never import from here.
"""
