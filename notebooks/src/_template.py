# %% [markdown]
# # NN · Title: one step of the Kontext pipeline
#
# One or two sentences: which step of `FluxKontextPipeline` this notebook rebuilds, and
# where it sits in the whole machine (see `00_overview`).
#
# ## What you will learn
# - three to five concrete things the reader can do or explain afterwards
#
# ## Prerequisites
# - the notebooks this one builds on; the maths or PyTorch it assumes

# %%
import kontext_teach as kt

device = kt.setup()

# %% [markdown]
# ## Theory
# The idea in prose, with the formula next to the code that computes it. Say what the
# common misreading is, and why it is tempting, where there is one.

# %% [markdown]
# ## Practice
# Each concept block: prose -> code (shape comments where shapes change) -> picture ->
# **check**: `kt.compare(name, ours, diffusers_result)` prints one line and raises on a
# mismatch. Prefer printing rounded, deterministic values.

# %% [markdown]
# ## Summary
# - what the reader now knows, one line each

# %% [markdown]
# ## Exercises
# Two or three. Solutions live in `kontext_teach.solutions.<this notebook>` and are
# checked by `tests/test_solutions_<...>.py`.

# %% [markdown]
# ## References
# - papers, diffusers source files (with the class or function), BFL's reference code
