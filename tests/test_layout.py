"""The package layout tells the architecture: the pipeline steps at the top, the machinery in rooms."""

import ast
import pathlib
import subprocess
import sys

import kontext_teach

PACKAGE = pathlib.Path(kontext_teach.__file__).parent
ROOMS = ("anatomy", "training", "toy", "lab", "solutions")


def top_level_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}


def imported_modules(path: pathlib.Path, package: list[str] | None = None) -> set[str]:
    """Absolute names (kontext_teach.X.Y) of everything a module of the package imports from the package."""
    tree = ast.parse(path.read_text())
    package = package or ["kontext_teach", *path.relative_to(PACKAGE).parts[:-1]]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {n for n in names if n.startswith("kontext_teach")}


def test_top_level_holds_only_the_pipeline_steps():
    assert top_level_modules() == set(kontext_teach.STEPS)
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(ROOMS)


def test_step_modules_never_import_the_machinery():
    for step in kontext_teach.STEPS:
        for name in imported_modules(PACKAGE / f"{step}.py"):
            room = name.split(".")[1] if "." in name else ""
            assert room not in ROOMS, f"{step}.py imports {name}: a pipeline step may import only other steps"


def test_the_import_check_sees_a_violation(tmp_path):
    fake = tmp_path / "packing.py"
    fake.write_text((PACKAGE / "packing.py").read_text() + "\nfrom .anatomy import full_size\nimport kontext_teach.toy\n")
    found = imported_modules(fake, ["kontext_teach"])
    assert {"kontext_teach.anatomy.full_size", "kontext_teach.toy"} <= found


def test_every_room_says_what_lives_there_and_what_it_may_import():
    for room in ROOMS[:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{room}/__init__.py needs a docstring naming its modules and imports"
        for module in (PACKAGE / room).glob("*.py"):
            if module.stem != "__init__":
                assert f"``{module.stem}``" in doc, f"{room}/__init__.py does not list {module.stem}"


def test_step_modules_are_attributes_of_the_package():
    assert kontext_teach.packing.pack_latents is not None
    assert kontext_teach.load_pipeline.__name__ == "load_pipeline"


def test_command_line_lists_the_commands_without_importing_torch():
    code = ("import sys; from kontext_teach.__main__ import main; code = main(['--help']); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("train", "bench", "mini-training", "build-embedded"):
        assert command in result.stdout
    assert "torch not imported" in result.stdout
