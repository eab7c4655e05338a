"""Solutions to the exercises of 00_overview."""

from ..anatomy import data_flow, full_size


def full_size_token_counts(height: int, width: int, tokenizers: dict) -> dict[str, int]:
    """Exercise 1: target, context, text and total tokens of a full-size edit at height x width
    (condition image of the same size), read from a meta-device trace."""
    components = {**full_size.meta_components(), **tokenizers}
    shapes = {a.name: a.shape for a in data_flow.trace_edit(components, height=height, width=width, device="meta")}
    target, context, text = shapes["noise tokens"][1], shapes["context tokens"][1], shapes["text ids"][0]
    return dict(target=target, context=context, text=text, total=target + context + text)


def parameter_ratio(miniature_components: dict) -> dict[str, float]:
    """Exercise 2: how many times larger each full-size network is than the miniature's."""
    full = full_size.parameter_counts(full_size.meta_components())
    mini = full_size.parameter_counts(miniature_components)
    return {name: full[name] / mini[name] for name in full}
