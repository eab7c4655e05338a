"""Solutions to the exercises of A1_mini_kontext."""

from PIL import ImageOps

from ..toy import edit_metric


def mirror_everything_baseline(pairs: list) -> list:
    """Exercise 1: a 'model' that answers every instruction by mirroring the source, scored per family."""
    answers = [ImageOps.mirror(pair.source) for pair in pairs]
    scores = [edit_metric.score_image(answer, pair) for answer, pair in zip(answers, pairs)]
    return edit_metric.summarise(scores, [pair.family for pair in pairs])


def hardest_family(evaluation: edit_metric.Evaluation, exclude=()) -> str:
    """Exercise 2: the edit family with the lowest edit accuracy of the model (leaving out `exclude`)."""
    rows = [row for row in evaluation.model if row.family != "overall" and row.family not in exclude]
    return min(rows, key=lambda row: (row.edit_accuracy, row.region_accuracy)).family


def failed_regions(image, pair) -> list[str]:
    """Exercise 3: the names of the regions an answer got wrong (empty when the edit is right)."""
    return [region.name for region in edit_metric.score_image(image, pair).regions if not region.correct]
