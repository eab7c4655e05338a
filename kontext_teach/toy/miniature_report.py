"""Measure what a trained miniature can do, and write it down beside its weights.

    python -m kontext_teach.toy.miniature_report kontext_teach/toy/embedded_model [--pairs 100] [--threads 2]

Writes ``evaluation.json`` into the model folder (notebook A1, notebook 08 and the README read it):

* ``heldout``: edit accuracy per family on held-out toy-world pairs (seeds never trained on), sampled
  by the stock ``FluxKontextPipeline`` at the model's trained text length and at the pipeline's
  default of 512 T5 tokens (no ``max_sequence_length`` passed), with the copy baseline and VAE ceiling;
* ``binding``: the two families that must find one shape by its name (recolour one, remove), on
  held-out pairs grouped by which kinds of shape share the scene: it shows which shapes the model
  tells apart;
* ``drawn``: the same on scenes of ``drawn_scenes``, a renderer of our own that the training never saw;
* ``guidance``: edit accuracy, PSNR and shape saturation over guidance values, for the distilled
  student (one pass) and the CFG teacher (two passes, true CFG with an empty negative prompt);
* ``distillation``: the student's velocity against the teacher's CFG velocity at a few guidance values;
* ``probes``: ``shape_probe``'s answers to "where is the circle/square distinction lost?": the VAE's
  latents around each shape, then linear probes on the context tokens after every transformer block
  (student and teacher).
"""

import argparse
import dataclasses
import json
import pathlib
import time

import torch

from ..lab.loading import load_pipeline, trained_text_length
from . import drawn_scenes, edit_metric, guidance, shape_probe, toy_world

GUIDANCE_VALUES = (1.0, 1.5, 2.5, 4.0, 6.0)
SAMPLING_GUIDANCE = 2.5  # what BFL and diffusers' Kontext docs use
PIPELINE_TEXT_LENGTH = 512  # FluxKontextPipeline's default max_sequence_length


def family_rows(evaluation: edit_metric.Evaluation) -> dict:
    return {which: [dataclasses.asdict(row) for row in getattr(evaluation, which)]
            for which in ("model", "copy", "ceiling")}


def heldout(pipe, per_family: int, text_length: int, steps: int) -> dict:
    """Per family: the model, the copy baseline and the VAE ceiling on held-out toy-world pairs."""
    pairs = toy_world.make_pairs("heldout", per_family * len(toy_world.BASE_FAMILIES), toy_world.BASE_FAMILIES)
    return family_rows(edit_metric.evaluate(pipe, pairs, steps=steps, guidance_scale=SAMPLING_GUIDANCE,
                                            max_sequence_length=text_length))


BINDING_FAMILIES = ("recolour_one", "remove")
KIND_GROUPS = toy_world.KIND_GROUPS


def pairs_by_kinds(family: str, per_group: int, start: int = 100_000, limit: int = 100_000) -> dict[str, list]:
    """The first `per_group` held-out pairs of `family` (seeds from `start` on) for each group of KIND_GROUPS."""
    groups = {group: [] for group in KIND_GROUPS}
    for offset in range(limit):
        pair = toy_world.make_pair(toy_world.HELDOUT_SEEDS.start + start + offset, family)
        group = groups.get(toy_world.scene_kinds(pair.source_scene))
        if group is not None and len(group) < per_group:
            group.append(pair)
        if all(len(g) == per_group for g in groups.values()):
            return groups
    raise RuntimeError(f"{limit} seeds did not give {per_group} {family} pairs of every group {KIND_GROUPS}")


def binding(pipe, per_group: int, text_length: int, steps: int) -> dict:
    """{family: {kinds: {count, edit_accuracy}}} for the families that name one shape."""
    result = {}
    for family in BINDING_FAMILIES:
        groups = pairs_by_kinds(family, per_group)
        pairs = [pair for group in groups.values() for pair in group]
        images = edit_metric.generate(pipe, pairs, steps=steps, guidance_scale=SAMPLING_GUIDANCE,
                                      max_sequence_length=text_length)
        right = [edit_metric.score_image(image, pair).edit_correct for image, pair in zip(images, pairs)]
        result[family] = {group: {"count": per_group,
                                  "edit_accuracy": sum(right[i * per_group:(i + 1) * per_group]) / per_group}
                          for i, group in enumerate(groups)}
    return result


def drawn(pipe, per_family: int, text_length: int, steps: int) -> dict:
    pairs = drawn_scenes.make_drawn_pairs(per_family)
    images = edit_metric.generate(pipe, pairs, steps=steps, guidance_scale=SAMPLING_GUIDANCE,
                                  max_sequence_length=text_length)
    return {"model": drawn_scenes.score_drawn(images, pairs),
            "copy": drawn_scenes.score_drawn([p.source for p in pairs], pairs)}


def guidance_curves(pipe, teacher, per_family: int, text_length: int, steps: int) -> dict:
    pairs = toy_world.make_pairs("heldout", per_family * len(toy_world.BASE_FAMILIES), toy_world.BASE_FAMILIES,
                                 start=50_000)
    result = {"pairs": len(pairs), "steps": steps,
              "student": guidance.guidance_curve(pipe, pairs, GUIDANCE_VALUES, steps=steps,
                                                 max_sequence_length=text_length)}
    if teacher is not None:
        result["teacher_true_cfg"] = [
            {**guidance.guidance_curve(teacher, pairs, [guidance.TEACHER_GUIDANCE], steps=steps,
                                       max_sequence_length=text_length,
                                       **guidance.true_cfg_options(scale))[0], "guidance": scale}
            for scale in GUIDANCE_VALUES]
    return result


def distillation(pipe, teacher, text_length: int) -> list[dict]:
    pairs = toy_world.make_pairs("heldout", 32, toy_world.BASE_FAMILIES, start=60_000)
    rows = []
    for sigma in (0.3, 0.7, 0.95):
        inputs = guidance.gap_inputs(pipe, pairs, sigma, max_sequence_length=text_length)
        for scale in (1.0, 2.5, 4.0, 6.0):
            rows.append({"sigma": sigma, **guidance.distillation_gap(pipe.transformer, teacher.transformer,
                                                                     inputs, scale)})
    return rows


def probes(pipe, teacher, scenes: int = 1500, pairs: int = 800, vae_steps: int = 1500) -> dict:
    """The VAE's shape probe, then the per-block token probes of the student (at the sampling guidance) and of
    the teacher (at its own guidance input)."""
    result = {"vae": dataclasses.asdict(shape_probe.probe_vae(pipe.vae, scenes, scenes * 4 // 15, vae_steps)),
              "student": dataclasses.asdict(shape_probe.probe_blocks(pipe, pairs, pairs * 3 // 8,
                                                                     guidance=SAMPLING_GUIDANCE))}
    if teacher is not None:
        result["teacher"] = dataclasses.asdict(shape_probe.probe_blocks(teacher, pairs, pairs * 3 // 8,
                                                                        guidance=guidance.TEACHER_GUIDANCE))
    return result


EVALUATION_FILE = "evaluation.json"


def load_evaluation(folder: str | pathlib.Path) -> dict | None:
    """The report stored beside a miniature's weights (None for a model without one, e.g. full size)."""
    path = pathlib.Path(folder) / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


PARTS = ("heldout", "heldout_512", "binding", "drawn", "guidance", "distillation", "probes")


def report(folder: pathlib.Path, per_family: int = 100, long_per_family: int = 50, curve_per_family: int = 32,
           per_group: int = 50, steps: int = 28, parts=PARTS, out: pathlib.Path | None = None, log=print) -> dict:
    """Measure `parts` of the report and write them (merged into what `out` already holds) to `out`,
    by default the folder's evaluation.json."""
    folder = pathlib.Path(folder)
    out = out or folder / EVALUATION_FILE
    pipe = load_pipeline(folder, device="cpu", dtype=torch.float32)
    teacher = guidance.teacher_pipeline(pipe, folder) if guidance.has_teacher(folder) else None
    text_length = trained_text_length(folder)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update({"steps": steps, "guidance_scale": SAMPLING_GUIDANCE, "text_length": text_length})
    measures = {"heldout": lambda: heldout(pipe, per_family, text_length, steps),
                "heldout_512": lambda: heldout(pipe, long_per_family, PIPELINE_TEXT_LENGTH, steps),
                "binding": lambda: binding(pipe, per_group, text_length, steps),
                "drawn": lambda: drawn(pipe, per_family, text_length, steps),
                "guidance": lambda: guidance_curves(pipe, teacher, curve_per_family, text_length, steps),
                "distillation": lambda: distillation(pipe, teacher, text_length),
                "probes": lambda: probes(pipe, teacher)}
    for name in parts:
        if name == "distillation" and teacher is None:
            continue
        start = time.perf_counter()
        with torch.no_grad():
            result[name] = measures[name]()
        log(f"{name}: {time.perf_counter() - start:.0f}s\n{json.dumps(result[name], indent=1)[:3000]}")
        out.write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.toy.miniature_report", description=__doc__)
    parser.add_argument("folder", type=pathlib.Path, help="a trained miniature (a FluxKontextPipeline folder)")
    parser.add_argument("--pairs", type=int, default=100, help="held-out and drawn pairs per family")
    parser.add_argument("--long-pairs", type=int, default=50, help="pairs per family at 512 T5 tokens")
    parser.add_argument("--curve-pairs", type=int, default=32, help="pairs per family for the guidance curves")
    parser.add_argument("--group-pairs", type=int, default=50,
                        help="binding: held-out pairs per family and group of shape kinds")
    parser.add_argument("--steps", type=int, default=28, help="sampling steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--parts", default=",".join(PARTS), help="which measurements, comma-separated")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON file (default FOLDER/evaluation.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..lab.harness import silence_libraries
    silence_libraries()
    return report(args.folder, args.pairs, args.long_pairs, args.curve_pairs, args.group_pairs, args.steps,
                  parts=args.parts.split(","), out=args.out)


if __name__ == "__main__":
    main()
