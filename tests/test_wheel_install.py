"""alignmix as an installed package: the wheel holds the bundled recipes (and what they point to), and an install
outside the source tree finds them by name.

The wheel goes into a fresh venv with --no-deps; its dependencies come from the test's own environment through a
.pth line (a plain path: the editable alignmix of that environment is not loaded, its finder .pth is never read).
Everything runs from a folder outside the checkout, so nothing imports alignmix from the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_ships_the_recipes_and_an_install_outside_the_tree_finds_them(tmp_path):
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                  "-w", str(tmp_path / "dist"), str(ROOT)], cwd=tmp_path)  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("alignmix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = sorted(p.name for p in (ROOT / "alignmix" / "recipes").glob("*.yaml"))
    assert bundled and {f"alignmix/recipes/{n}" for n in bundled} <= names
    assert "alignmix/recipes/data/sharegpt_first_turns.json" in names  # prompts-demo.yaml reads it

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)], tmp_path)
    assert install.returncode == 0, install.stderr

    check = _run([str(python), "-c", (
        "import alignmix, sys\n"
        "from alignmix.flows.recipes import RECIPES_DIR, resolve_recipe\n"
        "print(alignmix.__file__)\n"
        "print(RECIPES_DIR)\n"
        f"for name in {[Path(n).stem for n in bundled]!r}:\n"
        "    r = resolve_recipe(name)\n"
        "    print(name, r.name, len(r.curation))\n"
    )], tmp_path)  # fmt: skip
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0].startswith(str(site)) and lines[1] == str(site / "alignmix" / "recipes")
    assert [line.split()[0] for line in lines[2:]] == [Path(n).stem for n in bundled]
    assert "demo demo " in "\n".join(lines[2:]) + " "

    cli = _run([str(env_dir / "bin" / "alignmix"), "build", "demo", "--help"], tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "Usage" in cli.stdout and "build" in cli.stdout
