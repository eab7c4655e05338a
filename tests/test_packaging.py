"""One source of versions: environment.yml installs exactly what pyproject.toml pins."""

import importlib.metadata
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*$")


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = dict(r.split("==") for r in requirements)
    assert all(pins.values()), "every dependency is pinned with =="
    return pins


def environment_pins() -> dict[str, str]:
    return {m[1]: m[2] for line in (ROOT / "environment.yml").read_text().splitlines() if (m := PIN.match(line))}


def test_environment_yml_pins_the_same_versions_as_pyproject():
    env = environment_pins()
    env.pop("python", None)
    assert env == pyproject_pins()


def test_environment_yml_python_satisfies_requires_python():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"-\s*python=3\.11\b", text)
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11"


def test_the_installed_versions_are_the_pinned_ones():
    for name, version in pyproject_pins().items():
        installed = importlib.metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: installed {installed}, pinned {version}"


def test_setup_script_reads_the_torch_pin_from_pyproject():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "pyproject.toml" in script and not re.search(r"(?<![\w-])torch==\d", script)


def test_the_wheel_ships_the_miniature_and_the_flip_lora(tmp_path):
    """pip installs from a wheel: the weights, the records and the shipped LoRA must be in it (package-data)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    import pytest
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "kontext_teach", source / "kontext_teach", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist())
    shipped = [path.relative_to(ROOT).as_posix() for folder in ("toy/embedded_model", "toy/embedded_loras")
               for path in (ROOT / "kontext_teach" / folder).rglob("*") if path.is_file()
               and "__pycache__" not in path.parts]
    assert shipped and not [name for name in shipped if name not in names]
