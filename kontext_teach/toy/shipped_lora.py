"""The LoRA that ships with the miniature: "flip the image upside down", an edit the base model never saw.

    python -m kontext_teach.toy.shipped_lora build              # retrain it: about 45 min on one CPU thread
    python -m kontext_teach.toy.shipped_lora evaluate           # measure the shipped file again

``build`` writes the training pairs as a dataset folder, trains with the series' own command line
(``python -m kontext_teach train``, the exact command is kept in the record), and puts the LoRA
file (diffusers' format, with its adapter metadata) and ``training_record.json`` in
``embedded_loras/flip_upside_down/``. Notebook 09 loads that folder into a stock
``FluxKontextPipeline`` with ``load_lora_weights``.

Why it trains longer than notebook 09's live run: "make everything gold" only ties a new word to a
recolouring the model already knows, while a flip moves every shape to another place (and turns
triangles over), which the base model never did; the measured steps are in the record.

The record's scores: held-out toy-world pairs of the flip and of the four old edits, and the same
on scenes from the second renderer (``drawn_scenes``), before and after loading the LoRA.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

from . import drawn_scenes, edit_metric, toy_world
from .lora_experiments import EVAL_STEPS, OLD_HELDOUT_START, RECIPES, Recipe, parse_recipe, training_pairs

EDIT = "flip_upside_down"
FOLDER = pathlib.Path(__file__).parent / "embedded_loras" / EDIT
LORA_FILE = "pytorch_lora_weights.safetensors"
RECORD_FILE = "training_record.json"
# Measured on the shipped miniature (lora_experiments, 32-64 held-out pairs): 2,500 steps with 50 % replay
# flipped 0.97 but kept the old edits at 0.86 x base; 5,000 steps with 75 % replay kept them at 0.93 x base
# but flipped 0.84; 6,000 steps with 65 % replay and 1,024 flip pairs flipped 0.96 with the old edits kept
# (100 pairs each), but only 0.77 of the second renderer's scenes, failing mostly on shapes smaller than the
# base model ever saw; 10,000 steps on 4,096 flip pairs (60 % replay) reached 0.79 there, and 0.80 with shapes
# of 0.07-0.2 of the side in the flip pairs; 16,000 steps of that reached 0.86 on the first miniature. On the
# deeper miniature (2 double + 4 single blocks) the same 16,000 steps reached 0.79 on the drawn flips, and 0.79
# again with shapes of 0.06-0.2 or 8,192 flip pairs (the same pairs failed: small shapes, orange drawn
# yellowish, shapes that merge; 11 of the 100 drawn flips fail even as the target put through the VAE);
# 50 % replay with shapes of 0.06-0.2 reached 0.80 with the old edits kept. That is the shipped recipe (its
# record has the scores).
RECIPE = RECIPES["shipped-flip"]
EVAL_PAIRS = 100  # held-out pairs per measurement: the flip, the old edits (all four in turn), and both on drawn scenes


def train_options(recipe: Recipe = RECIPE) -> list[str]:
    """The trainer's command-line options for `recipe` (everything but --data and --output)."""
    return ["--steps", str(recipe.steps), "--batch-size", str(recipe.batch_size),
            "--learning-rate", f"{recipe.learning_rate:g}", "--lr-schedule", recipe.lr_schedule,
            "--warmup-steps", str(recipe.warmup_steps), "--rank", str(recipe.rank), "--targets", recipe.targets,
            "--guidance", f"{recipe.guidance:g}", "--checkpoint-every", "0", "--seed", "0", "--no-progress",
            *(["--alpha", f"{recipe.alpha:g}"] if recipe.alpha is not None else [])]


def write_training_data(folder, recipe: Recipe = RECIPE) -> pathlib.Path:
    """The training pairs as a dataset folder: `recipe.new_pairs` flips, then the replayed old edits."""
    from ..training.edit_pairs import save_pair_folder
    return save_pair_folder(training_pairs(EDIT, recipe), folder)


def evaluation_sets(count: int = EVAL_PAIRS, old_count: int | None = None) -> dict[str, list]:
    """Held-out pairs: `count` flips and `old_count` (default `count`) old edits, all four in turn, from the toy
    world and from the second renderer. A smaller count gives the first pairs of a larger one."""
    old_count = count if old_count is None else old_count
    old_per_family = -(-old_count // len(toy_world.BASE_FAMILIES))
    return {"flip": toy_world.make_pairs("heldout", count, (EDIT,)),
            "old": toy_world.make_pairs("heldout", old_count, toy_world.BASE_FAMILIES, start=OLD_HELDOUT_START),
            "drawn flip": drawn_scenes.make_drawn_pairs(count, drawn_scenes.LORA_FAMILIES),
            "drawn old": drawn_scenes.make_drawn_pairs(old_per_family, drawn_scenes.FAMILIES)[:old_count]}


def edit_accuracy(pipe, pairs: list, text_length: int, steps: int = EVAL_STEPS) -> float:
    """Share of `pairs` the pipeline edits right (edit_metric's regions; drawn pairs by their own masks)."""
    images = edit_metric.generate(pipe, pairs, steps=steps, max_sequence_length=text_length)
    if isinstance(pairs[0], drawn_scenes.DrawnPair):
        return drawn_scenes.score_drawn(images, pairs)["overall"]["edit_accuracy"]
    return edit_metric.summarise([edit_metric.score_image(i, p) for i, p in zip(images, pairs)],
                                 [p.family for p in pairs])[-1].edit_accuracy


def measure(pipe, sets: dict[str, list], text_length: int) -> dict[str, float]:
    """{set name: edit accuracy} for every evaluation set."""
    return {name: round(edit_accuracy(pipe, pairs, text_length), 3) for name, pairs in sets.items()}


def evaluate(folder=FOLDER, count: int = EVAL_PAIRS, model=None) -> dict:
    """{"before", "after"}: the stock pipeline's accuracies without and with the LoRA in `folder`."""
    from ..lab.loading import load_lora, load_pipeline, trained_text_length
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    sets, text_length = evaluation_sets(count), trained_text_length(model)
    before = measure(pipe, sets, text_length)
    load_lora(pipe, folder)
    return {"pairs_each": count, "sampling_steps": EVAL_STEPS, "before": before,
            "after": measure(pipe, sets, text_length)}


def meets_targets(scores: dict, new_floor: float = 0.8, old_share: float = 0.9) -> bool:
    """Issue 13's bar, on both renderers: the flip >= new_floor, the old edits >= old_share x base."""
    before, after = scores["before"], scores["after"]
    return (after["flip"] >= new_floor and after["drawn flip"] >= new_floor
            and after["old"] >= old_share * before["old"] and after["drawn old"] >= old_share * before["drawn old"])


def load_record(folder=FOLDER) -> dict | None:
    """The shipped LoRA's training record (None if the folder has none)."""
    path = pathlib.Path(folder) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where the run happened: CPU, cores, torch version and the threads it used."""
    import torch
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def build(folder=FOLDER, recipe: Recipe = RECIPE, count: int = EVAL_PAIRS) -> dict:
    """Train the LoRA with the trainer's command line, copy it into `folder`, measure it, write its record."""
    from ..training import train
    folder = pathlib.Path(folder)
    with tempfile.TemporaryDirectory(prefix="shipped-lora-") as work:
        data = write_training_data(pathlib.Path(work) / "data", recipe)
        output = pathlib.Path(work) / "lora"
        options = train_options(recipe)
        start = time.perf_counter()
        if train.main(["--data", str(data), "--output", str(output), *options]) != 0:
            raise RuntimeError("the training command failed; its error is printed above")
        seconds = time.perf_counter() - start
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(output / LORA_FILE, folder / LORA_FILE)
        train_config = json.loads((output / "train_config.json").read_text())
    record = {"edit": EDIT, "date": time.strftime("%Y-%m-%d"),
              "data_command": "python -m kontext_teach.toy.shipped_lora data DATA",
              "command": " ".join(["python -m kontext_teach train --data DATA --output OUTPUT", *options]),
              "recipe": dataclasses.asdict(recipe),
              "train_config": train_config, "train_seconds": round(seconds, 1), **machine(),
              "scores": evaluate(folder, count)}
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.toy.shipped_lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "evaluate", "data"],
                        help="build: train, measure and ship; evaluate: measure the shipped file; "
                             "data: write the training pairs to FOLDER")
    parser.add_argument("folder", nargs="?", default=None, help="with data: the dataset folder to write")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--eval-pairs", type=int, default=EVAL_PAIRS, help="held-out pairs per measurement")
    parser.add_argument("--recipe", default=None, help="with build: changes to the shipped recipe, written like "
                        "lora_experiments' (shipped-flip+steps=8000+replay=0.5); default: the shipped recipe")
    parser.add_argument("--out", type=pathlib.Path, default=FOLDER, help="with build: the folder to write")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.command == "data":
        if args.folder is None:
            parser.error("data needs a FOLDER to write the pairs to")
        print(f"wrote {write_training_data(args.folder)}")
    elif args.command == "evaluate":
        print(json.dumps(evaluate(FOLDER, args.eval_pairs), indent=1))
    else:
        try:
            recipe = RECIPE if args.recipe is None else parse_recipe(args.recipe)
        except ValueError as error:
            parser.error(f"--recipe: {error}")
        record = build(args.out, recipe, args.eval_pairs)
        print(json.dumps(record["scores"], indent=1))
        print("meets the targets" if meets_targets(record["scores"]) else "misses the targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
