"""The LoRA experiment table: recipes parse, the bar is issue 13's, and a row is a real (tiny) LoRA run."""

import json

import pytest

from kontext_teach.toy import lora_experiments as lx
from kontext_teach.toy import toy_world


def test_recipes_and_their_changes():
    live = lx.RECIPES["live-cpu"]
    assert lx.parse_recipe("live-cpu+targets=attention+text+rank=4").targets == "attention+text"
    changed = lx.parse_recipe("live-cpu+steps=20+learning_rate=2e-3+alpha=None+trigger=photo")
    assert (changed.steps, changed.learning_rate, changed.alpha, changed.trigger) == (20, 2e-3, None, "photo")
    assert changed.targets == live.targets and changed.name == "live-cpu+steps=20+learning_rate=2e-3+alpha=None+trigger=photo"
    config = live.config(24)
    assert (config.rank, config.targets, config.max_sequence_length, config.steps) == (16, "all-linear", 24, live.steps)
    for bad in ["nope", "live-cpu+colour=red", "live-cpu+steps"]:
        with pytest.raises(ValueError, match="recipe|cannot change"):
            lx.parse_recipe(bad)


def test_heldout_pairs_and_trigger():
    new, old = lx.heldout_pairs("everything_gold", 8, trigger="photo")
    assert len(new) == len(old) == 8 and all(p.instruction.startswith("photo ") for p in new)
    assert {p.family for p in old} == set(toy_world.BASE_FAMILIES)
    assert all(toy_world.split_of(p.seed) == "heldout" for p in new + old)


@pytest.mark.parametrize("new, old, seconds, ok", [(0.85, 0.80, 100, True), (0.79, 0.84, 100, False),
                                                   (0.9, 0.70, 100, False), (0.9, 0.84, 121, False)])
def test_meets_issue_13s_bar(new, old, seconds, ok):
    row = dict(new_after=new, old_after=old, old_before=0.84, train_seconds=seconds)
    assert lx.meets_targets(row) is ok


def test_a_row_is_a_real_run(tmp_path):
    recipe = lx.parse_recipe("live-cpu+steps=3+warmup_steps=1+new_pairs=6")
    row = {**lx.base_scores("everything_gold", 4), **lx.run_recipe("everything_gold", recipe, 4)}
    assert row["training_pairs"] == 6 + round(6 * recipe.replay / (1 - recipe.replay)) and row["steps"] == 3 and row["steps_per_second"] > 0
    assert 0 <= row["new_after"] <= 1 and row["new_vae_ceiling"] > 0
    assert set(row["old_after_by_family"]) == set(toy_world.BASE_FAMILIES) | {"overall"}
    table = lx.format_rows([row])
    assert table.splitlines()[-1].startswith("everything_gold") and json.dumps(row)


def test_command_line_checks_its_arguments():
    with pytest.raises(SystemExit):
        lx.parse_args(["--edits", "mirror"])  # a base family is not a new edit
    with pytest.raises(SystemExit):
        lx.parse_args(["--recipes", "live-cpu+rank"])
    runs = lx.parse_args(["--edits", "swap_colours", "--recipes", "live-cpu,live-cpu+replay=0.0"]).runs
    assert [(edit, recipe.name, recipe.replay) for edit, recipe in runs] == \
        [("swap_colours", "live-cpu", lx.RECIPES["live-cpu"].replay), ("swap_colours", "live-cpu+replay=0.0", 0.0)]
    table = lx.parse_args([]).runs
    assert [(edit, recipe.name) for edit, recipe in table] == lx.TABLE
    assert ("everything_gold", "live-cpu") in lx.TABLE and ("everything_gold", "live-cpu+replay=0.0") in lx.TABLE


def test_the_kept_table_loads_and_formats():
    table = lx.load_table()
    assert table is not None and table["rows"], "notebook 09 reads this table"
    text = lx.format_rows(table["rows"])
    assert len(text.splitlines()) == len(table["rows"]) + 2
    assert {row["edit"] for row in table["rows"]} >= {"everything_gold", "flip_upside_down"}


def test_best_runs_pick_the_highest_then_the_shortest():
    rows = [dict(edit="a", recipe="r1", new_after=0.5, steps=100), dict(edit="a", recipe="r2", new_after=0.9, steps=900),
            dict(edit="a", recipe="r3", new_after=0.9, steps=300), dict(edit="b", recipe="r1", new_after=0.0, steps=50)]
    best = lx.best_runs(rows)
    assert list(best) == ["a", "b"] and best["a"]["recipe"] == "r3" and best["b"]["recipe"] == "r1"
    assert lx.find_row(rows, "a", "r2")["steps"] == 900 and lx.find_row(rows, "c", "r1") is None


def test_the_kept_table_is_the_current_table_on_the_shipped_model():
    table = lx.load_table()
    assert table["model"] == "the embedded miniature"
    assert [(row["edit"], row["recipe"]) for row in table["rows"]] == lx.TABLE
    for edit, row in lx.best_runs(table["rows"]).items():
        assert f"{edit:<18} best {row['new_after']:.2f}" in lx.format_best(table["rows"])
