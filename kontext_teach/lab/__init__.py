"""The lab bench every notebook stands on.

* ``harness`` - ``setup()`` (versions, seed, quiet libraries, offline guard) and ``compare()``
* ``loading`` - ``load_pipeline()``: the embedded miniature, a local folder or a hub id
* ``series``  - the map of the series, one line per notebook

May import the pipeline step modules; the step modules never import from here.
"""
