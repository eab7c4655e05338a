"""Anatomy: what the pipeline costs and what it sees, measured rather than run.

* ``data_flow``         - the shape at every arrow of an edit, computed on the meta device (00)
* ``full_size``         - configs of FLUX.1-Kontext-dev and its networks on the meta device (00, 02, 04, 07)
* ``sequence_costs``    - sequence lengths, attention pairs and FLOPs per preferred resolution (04)
* ``transformer_costs`` - parameters, FLOPs of one transformer call and LoRA target names (07, 09)
* ``attention_maps``    - where a target token looks in [text; target; context] (07)

May import the pipeline step modules (``kontext_teach.packing`` ...) and ``toy.miniature``'s
configs; the step modules never import from here.
"""
