"""The project's own prompt corpus: what the miniature's T5 tokenizer is trained on.

Editing instructions of the kind the series uses (recolour, remove, mirror, flip, ...)
plus a few hundred plain descriptive sentences, generated from templates so the corpus
is the same on every machine.
"""

import itertools

COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan",
           "white", "black", "gray", "grey", "brown", "magenta", "teal", "gold"]
SHAPES = ["circle", "square", "triangle", "star", "disk", "box", "ring", "rectangle",
          "dot", "shape", "object", "thing"]
PLACES = ["left", "right", "top", "bottom", "centre", "center", "middle", "corner"]
SUBJECTS = ["cat", "dog", "house", "tree", "car", "person", "woman", "man", "bird",
            "flower", "mountain", "river", "city", "street", "sky", "sea", "beach",
            "forest", "room", "table", "chair", "window", "door", "road", "garden"]
STYLES = ["photo", "painting", "sketch", "drawing", "watercolour", "cartoon", "poster",
          "illustration", "render", "picture", "image", "scene"]
MOODS = ["sunny", "rainy", "snowy", "foggy", "stormy", "bright", "dark", "calm",
         "busy", "quiet", "old", "new", "small", "large", "tall", "tiny", "huge"]

EDIT_TEMPLATES = [
    "make the {shape} {colour}",
    "turn the {shape} {colour}",
    "change the colour of the {shape} to {colour}",
    "change the color of the {shape} to {colour}",
    "recolour the {shape} {colour}",
    "recolor the {shape} to {colour}",
    "paint the {shape} {colour}",
    "make everything {colour}",
    "paint all shapes {colour}",
    "turn every shape {colour}",
    "remove the {shape}",
    "delete the {colour} {shape}",
    "erase the {shape}",
    "take away the {colour} {shape}",
    "get rid of the {shape}",
    "mirror the image",
    "mirror the picture left to right",
    "flip the image horizontally",
    "flip it left to right",
    "flip the image upside down",
    "flip the picture vertically",
    "turn the image upside down",
    "rotate the {shape} by ninety degrees",
    "move the {shape} to the {place}",
    "put a {colour} {shape} in the {place}",
    "add a {colour} {shape} at the {place}",
    "swap the colours of the shapes",
    "make the background {colour}",
    "keep the {shape} and remove everything else",
    "the {colour} {shape} on the {place}",
]

DESCRIPTION_TEMPLATES = [
    "a {style} of a {subject}",
    "a {mood} {style} of a {subject}",
    "a {colour} {subject} on a {mood} day",
    "make the {subject} look {mood}",
    "change the {subject} into a {style}",
    "turn the {style} into a {mood} {style}",
    "replace the {subject} with a {colour} {subject}",
    "add a {subject} next to the {subject}",
    "remove the {subject} from the {style}",
    "make the sky {mood} and the {subject} {colour}",
    "a {colour} {shape} on a plain background",
    "there is a {colour} {shape} in the {place} of the image",
]

FREE_TEXT = [
    "A cat wearing sunglasses, sitting on a beach at sunset.",
    "Change the text on the sign to say 'Hello, world!'",
    "Turn this photo into a watercolour painting, keep the composition.",
    "Make it look like it was taken at night, with street lights on.",
    "Remove the people in the background and keep the building.",
    "Give the person a red hat and blue scarf; keep the face unchanged.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 64 512 1024.",
    "Punctuation: , . ; : ! ? ' \" ( ) [ ] - + = / * & % $ # @",
]


def _fill(templates, **choices) -> list[str]:
    lines = []
    for template in templates:
        names = [n for n in choices if "{" + n + "}" in template]
        for values in itertools.product(*(choices[n] for n in names)):
            lines.append(template.format(**dict(zip(names, values))))
    return lines


def prompt_corpus() -> list[str]:
    """All sentences of the corpus, in a fixed order."""
    edits = _fill(EDIT_TEMPLATES, shape=SHAPES, colour=COLOURS, place=PLACES)
    descriptions = _fill(DESCRIPTION_TEMPLATES[:10], style=STYLES[:6], subject=SUBJECTS[:10],
                         mood=MOODS[:6], colour=COLOURS[:6])
    shape_lines = _fill(DESCRIPTION_TEMPLATES[10:], shape=SHAPES, colour=COLOURS, place=PLACES)
    vocabulary_lines = [" ".join(words) for words in (COLOURS, SHAPES, PLACES, SUBJECTS, STYLES, MOODS)]
    return edits + descriptions + shape_lines + vocabulary_lines + FREE_TEXT
