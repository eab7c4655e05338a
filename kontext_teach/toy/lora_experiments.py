"""Which new edit can a short LoRA run teach the miniature, and with which recipe? Measured.

    python -m kontext_teach.toy.lora_experiments --json runs/lora_table.json     # notebook 09's table
    python -m kontext_teach.toy.lora_experiments --edits swap_colours --recipes live-cpu+steps=600

For each reserved edit of the toy world (never in the base model's training) and each recipe:
cache new-edit pairs and old-edit pairs once, train a LoRA with ``train_lora`` on a mix of both
(``replay`` is the share of old pairs), and score held-out pairs of the new edit and of the old
edits with ``edit_metric`` before and after. The table it prints (and writes as JSON) is the one
notebook 09 quotes; rerun it when the miniature's weights change.
"""

import argparse
import dataclasses
import datetime
import json
import pathlib
import re
import tempfile
import time
from dataclasses import dataclass

import torch

from ..lab.loading import EMBEDDED_MODEL_DIR, load_pipeline, trained_text_length
from ..training.lora_training import TrainConfig, cache_pairs, train_lora
from . import edit_metric, toy_world

EVAL_STEPS = 16  # sampling steps of every evaluation (notebook 09's)
OLD_HELDOUT_START = 100  # held-out seeds of the old edits start here (notebook 09's)


@dataclass(frozen=True)
class Recipe:
    """A LoRA run: the TrainConfig settings that matter here, the data mix and a trigger phrase."""

    name: str
    targets: str = "all-linear"
    rank: int = 16
    alpha: float | None = None
    learning_rate: float = 1e-3
    steps: int = 300
    batch_size: int = 8
    replay: float = 0.5  # share of old-edit pairs in the training set
    new_pairs: int = 128  # new-edit training pairs
    trigger: str = ""  # words put before every new-edit instruction (train and evaluation); "" for none
    guidance: float = 1.0  # guidance input while training (evaluation samples at edit_metric's 2.5)
    lr_schedule: str = "constant"  # constant | cosine (TrainConfig.lr_schedule)
    warmup_steps: int = 0
    radius_low: float = toy_world.RADIUS_RANGE[0]  # shape sizes of the new-edit training pairs (fractions of the
    radius_high: float = toy_world.RADIUS_RANGE[1]  # side); the base model trained on RADIUS_RANGE

    def config(self, text_length: int, seed: int = 0) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           rank=self.rank, alpha=self.alpha, targets=self.targets, max_sequence_length=text_length,
                           guidance=self.guidance, lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
                           checkpoint_every=0, keep_checkpoints=1, seed=seed)


RECIPES = {recipe.name: recipe for recipe in [
    # notebook 09's live run: every linear layer, rank 16, lr 1e-3 (30 warm-up steps, then a cosine decay),
    # 450 steps of 8, 60 % old pairs (replay)
    Recipe("live-cpu", "all-linear", 16, None, 1e-3, 450, 8, 0.6, lr_schedule="cosine", warmup_steps=30),
    Recipe("live-cpu-constant", "all-linear", 16, None, 1e-3, 450, 8, 0.6),  # the same at a constant lr
    Recipe("notebook-r16", "all-linear", 16, None, 1e-3, 300, 8, 0.5),  # notebook 09's CPU run before issue 13
    # the shipped flip LoRA (shipped_lora.py): 16,000 steps, 50 % replay, 4,096 flip pairs with shapes of
    # 0.06-0.2 of the side (the base model saw 0.11-0.17)
    Recipe("shipped-flip", "all-linear", 16, None, 1e-3, 16000, 8, 0.5, new_pairs=4096, lr_schedule="cosine",
           warmup_steps=100, radius_low=0.06, radius_high=0.2),
]}
FLIP_LONG = "live-cpu+steps=2500+replay=0.5+new_pairs=512+warmup_steps=100"  # a longer run, more flip pairs
# The table of notebook 09: (edit, recipe) pairs, a recipe written as a name with changes (see parse_recipe).
TABLE = [
    ("everything_gold", "live-cpu"),
    ("everything_gold", "live-cpu+steps=150"),
    ("everything_gold", "live-cpu+replay=0.0"),  # the forgetting exercise: no replay
    ("everything_gold", "live-cpu+replay=0.0+trigger=cartoon"),  # does a trigger word protect the old edits?
    ("everything_gold", "live-cpu+replay=0.5+steps=300"),
    ("everything_gold", "live-cpu+targets=attention+text+learning_rate=2e-3+replay=0.75+steps=300"),
    ("swap_colours", "live-cpu"),
    ("swap_colours", FLIP_LONG),
    ("keep_only", "live-cpu"),
    ("flip_upside_down", "live-cpu"),
    ("flip_upside_down", FLIP_LONG),
    ("background_colour", "live-cpu"),  # out of reach: the VAE cannot draw a coloured background
]


def parse_recipe(spec: str) -> Recipe:
    """A recipe by name, with changes: 'attention-r8+steps=600+learning_rate=2e-3' (the spec becomes its name)."""
    name, *changes = re.split(r"\+(?=\w+=)", spec)  # a '+' before 'field=' ('attention+text' stays whole)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; use one of {sorted(RECIPES)}, optionally with +field=value changes")
    types = {f.name: f.type for f in dataclasses.fields(Recipe)}
    settings = {}
    for change in changes:
        key, _, value = change.partition("=")
        if key not in types or key == "name" or not value:
            raise ValueError(f"cannot change {change!r} in {spec!r}: write +field=value with a field of "
                             f"{[k for k in types if k != 'name']}")
        kind = types[key] if types[key] in (int, float, str) else float  # alpha: float | None
        settings[key] = kind(value) if not (key == "alpha" and value == "None") else None
    return dataclasses.replace(RECIPES[name], name=spec, **settings)


def with_trigger(pair: toy_world.EditPair, trigger: str) -> toy_world.EditPair:
    """The pair with `trigger` (if any) before its instruction."""
    return dataclasses.replace(pair, instruction=f"{trigger} {pair.instruction}") if trigger else pair


def heldout_pairs(edit: str, count: int, trigger: str = "") -> tuple[list, list]:
    """(new-edit pairs, old-edit pairs): `count` held-out pairs each, the old ones all base families in turn."""
    new = [with_trigger(p, trigger) for p in toy_world.make_pairs("heldout", count, (edit,))]
    return new, toy_world.make_pairs("heldout", count, toy_world.BASE_FAMILIES, start=OLD_HELDOUT_START)


def accuracies(pipe, pairs: list, text_length: int) -> dict:
    """Held-out edit accuracy of the pipeline on `pairs` (EVAL_STEPS sampling steps): per family and 'overall'."""
    evaluation = edit_metric.evaluate(pipe, pairs, steps=EVAL_STEPS, batch_size=16, max_sequence_length=text_length)
    return {row.family: row.edit_accuracy for row in evaluation.model}


def training_pairs(edit: str, recipe: Recipe) -> list:
    """A recipe's training pairs: its new-edit pairs, then its share of old ones (the trainer draws batches at random)."""
    new = [with_trigger(p, recipe.trigger) for p in toy_world.make_pairs(
        "train", recipe.new_pairs, (edit,), radius_range=(recipe.radius_low, recipe.radius_high))]
    old_count = round(recipe.new_pairs * recipe.replay / (1 - recipe.replay))  # replay: the old pairs' share of all
    return new + toy_world.make_pairs("train", old_count, toy_world.BASE_FAMILIES, start=10_000)


def run_recipe(edit: str, recipe: Recipe, eval_pairs: int = 32, model=None, seed: int = 0) -> dict:
    """Train one LoRA on a fresh pipeline and measure it: one row of the table (a dict)."""
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    text_length = trained_text_length(model)
    cache = cache_pairs(pipe, training_pairs(edit, recipe), text_length)
    with tempfile.TemporaryDirectory(prefix="lora-experiment-") as folder:
        start = time.perf_counter()
        train_lora(pipe, cache, recipe.config(text_length, seed), pathlib.Path(folder) / "lora", progress=False)
        seconds = time.perf_counter() - start
    new, old = heldout_pairs(edit, eval_pairs, recipe.trigger)
    old_after = accuracies(pipe, old, text_length)
    return dict(edit=edit, recipe=recipe.name, new_after=accuracies(pipe, new, text_length)["overall"],
                old_after=old_after["overall"], old_after_by_family=old_after,
                train_seconds=round(seconds, 1), steps=recipe.steps,
                steps_per_second=round(recipe.steps / seconds, 2), threads=torch.get_num_threads(),
                training_pairs=len(cache), settings=dataclasses.asdict(recipe))


def base_scores(edit: str, eval_pairs: int = 32, model=None, trigger: str = "") -> dict:
    """The base model's held-out accuracy on the new edit and on the old edits, and the VAE's ceiling on the new
    edit (its round trip of the targets: no LoRA of the transformer can do better)."""
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    text_length = trained_text_length(model)
    new, old = heldout_pairs(edit, eval_pairs, trigger)
    ceiling = edit_metric.summarise([edit_metric.score_image(image, pair) for image, pair in
                                     zip(edit_metric.vae_round_trip(pipe, [p.target for p in new]), new)],
                                    [p.family for p in new])[-1].edit_accuracy
    old_before = accuracies(pipe, old, text_length)
    return dict(new_before=accuracies(pipe, new, text_length)["overall"], old_before=old_before["overall"],
                old_before_by_family=old_before, new_vae_ceiling=ceiling)


TABLE_FILE = EMBEDDED_MODEL_DIR / "lora_experiments.json"  # the table notebook 09 reads, kept as data


def load_table(path: pathlib.Path = TABLE_FILE) -> dict | None:
    """{"model", "date", "threads", "rows"}: the experiment table kept beside the miniature (None if absent)."""
    return json.loads(path.read_text()) if path.is_file() else None


def meets_targets(row: dict, new_floor: float = 0.8, old_share: float = 0.9, seconds: float = 120.0) -> bool:
    """Issue 13's bar: new edit >= new_floor, old edits >= old_share x base, training <= seconds."""
    return (row["new_after"] >= new_floor and row["old_after"] >= old_share * row["old_before"]
            and row["train_seconds"] <= seconds)


def find_row(rows: list[dict], edit: str, recipe: str) -> dict | None:
    """The table's row of one (edit, recipe), or None."""
    return next((r for r in rows if r["edit"] == edit and r["recipe"] == recipe), None)


def best_runs(rows: list[dict]) -> dict[str, dict]:
    """{edit: its run with the best new-edit accuracy (the fewest steps among equals)}, edits in table order."""
    best = {}
    for row in rows:
        current = best.get(row["edit"])
        if current is None or (row["new_after"], -row["steps"]) > (current["new_after"], -current["steps"]):
            best[row["edit"]] = row
    return best


def format_best(rows: list[dict]) -> str:
    """One line per edit: how far its best run got, in how many steps and seconds, and the VAE's ceiling."""
    lines = []
    for edit, row in best_runs(rows).items():
        lines.append(f"{edit:<18} best {row['new_after']:.2f} after {row['steps']:>5} steps ({row['train_seconds']:>5.0f} s), "
                     f"old edits {row['old_after']:.2f} of {row['old_before']:.2f}; VAE ceiling {row['new_vae_ceiling']:.2f}")
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> str:
    """The experiment table as text."""
    header = (f"{'edit':<18}{'recipe':<28}{'VAE':>5}{'new before':>11}{'after':>7}{'old before':>11}{'after':>7}"
              f"{'train s':>9}{'steps/s':>9}{'threads':>8}  ok")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['edit']:<18}{r['recipe']:<28}{r['new_vae_ceiling']:>5.2f}{r['new_before']:>11.2f}{r['new_after']:>7.2f}"
                     f"{r['old_before']:>11.2f}{r['old_after']:>7.2f}{r['train_seconds']:>9.1f}"
                     f"{r['steps_per_second']:>9.2f}{r['threads']:>8}  {'yes' if meets_targets(r) else 'no'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kontext_teach.toy.lora_experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", default=None,
                        help=f"comma-separated reserved families ({','.join(toy_world.RESERVED_FAMILIES)}); with "
                             "--recipes, every edit with every recipe; neither: notebook 09's table (TABLE)")
    parser.add_argument("--recipes", default=None,
                        help=f"comma-separated recipes: names of {sorted(RECIPES)}, each optionally with changes "
                             "(live-cpu+steps=600+replay=0.5); default live-cpu")
    parser.add_argument("--eval-pairs", type=int, default=32, help="held-out pairs of the new edit and of the old edits")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the embedded miniature)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.edits is None and args.recipes is None:
        runs = TABLE
    else:
        edits = (args.edits or ",".join(toy_world.RESERVED_FAMILIES)).split(",")
        runs = [(edit, spec) for edit in edits for spec in (args.recipes or "live-cpu").split(",")]
    for edit, _ in runs:
        if edit not in toy_world.RESERVED_FAMILIES:
            parser.error(f"--edits: {edit!r} is not a reserved family; use some of {toy_world.RESERVED_FAMILIES}")
    try:
        args.runs = [(edit, parse_recipe(spec)) for edit, spec in runs]
    except ValueError as error:
        parser.error(f"--recipes: {error}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, before = [], {}
    for edit, recipe in args.runs:
        if (edit, recipe.trigger) not in before:
            before[edit, recipe.trigger] = base_scores(edit, args.eval_pairs, args.model, recipe.trigger)
        rows.append({**before[edit, recipe.trigger], **run_recipe(edit, recipe, args.eval_pairs, args.model, args.seed)})
        print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
        if args.json:
            table = {"model": args.model or "the embedded miniature", "date": datetime.date.today().isoformat(),
                     "threads": args.threads, "rows": rows}
            pathlib.Path(args.json).write_text(json.dumps(table, indent=1))
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
