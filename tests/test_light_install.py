"""The light install (issue 13): `pip install morphspec` without torch runs the spec commands,
and the commands that need torch name the extra to install.

The slow test builds a fresh venv holding exactly the closure of the dependencies that
pyproject.toml declares, linked from the venv running the tests, so it needs no network
and proves both that torch is not imported and that the declared list is enough.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from morphspec.cli.app import app

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI runs 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXAMPLES = sorted(str(p) for p in (ROOT / "examples" / "specs").glob("*.yaml"))
HEAVY = {"torch", "safetensors"}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def test_torch_is_an_extra_that_dev_pulls_in() -> None:
    project = PYPROJECT["project"]
    assert not {_name(r) for r in project["dependencies"]} & HEAVY
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["torch"]} == HEAVY
    assert "morphspec[torch]" in extras["dev"]


def test_readme_installs_the_extra_and_ci_runs_its_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert "pip install -q -e '.[torch]'" in commands[0]
    assert "pip install -q -e '.[dev]'" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == commands[1]


def test_pre_commit_hook_validates_specs() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "morph-validate"]
    assert hook["language"] == "python" and hook["types"] == ["yaml"]
    program, *args = hook["entry"].split()
    assert program == "morph" and args == ["validate"]
    result = CliRunner().invoke(app, [*args, *EXAMPLES], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "morph-validate" in (ROOT / "README.md").read_text(encoding="utf-8")


def _closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions that `requirements` need, following their own needs."""
    found: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in found or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        found[name] = md.distribution(req.name)
        todo += [Requirement(r) for r in found[name].requires or []]
    return list(found.values())


def _light_venv(where: Path) -> Path:
    """A venv whose site-packages links only the declared dependencies and this checkout."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    for dist in _closure(PYPROJECT["project"]["dependencies"]):
        assert _name(dist.metadata["Name"]) not in HEAVY
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    (site / "morphspec-checkout.pth").write_text(str(ROOT) + "\n", encoding="utf-8")
    return python


@pytest.mark.slow
def test_light_install_runs_spec_commands_without_torch(tmp_path: Path) -> None:
    python = _light_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["NO_COLOR"] = "1"

    def morph(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(python), "-m", "morphspec", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)

    probe = [str(python), "-c", "import torch"]
    assert subprocess.run(probe, capture_output=True, env=env).returncode != 0
    validate = morph("validate", *EXAMPLES)
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.count(": ok (") == len(EXAMPLES)
    assert morph("schema").returncode == 0
    assert morph("summary", EXAMPLES[0]).returncode == 0
    mlp, wide = str(ROOT / "examples/specs/mlp.yaml"), str(ROOT / "examples/specs/mlp_wide.yaml")
    for args in (("convert", mlp, wide, "t.safetensors"), ("init", mlp, "-o", "t.safetensors")):
        result = morph(*args)
        assert result.returncode == 1, result.stderr
        assert "pip install 'morphspec[torch]'" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "t.safetensors").exists()
    diff = morph("diff", mlp, wide)
    assert diff.returncode == 0, diff.stderr
    assert "widen" in diff.stdout
