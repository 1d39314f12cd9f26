"""The installed package: one import name (``drive_attention``) whose parts are the
repository's top-level folders, and no generic top-level name claimed."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import drive_attention

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("agent", "envs", "models", "scripts", "tests", "drive_attention")


def _bare_imports(path: Path) -> list[str]:
    """Imports of a part by its folder's name (``import envs``, ``from agent.x import y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                  if n.split(".")[0] in drive_attention.PARTS]  # fmt: skip
    return found


def test_every_module_imports_the_parts_through_the_package_name() -> None:
    bare = [hit for folder in SOURCES for p in sorted((ROOT / folder).rglob("*.py"))
            for hit in _bare_imports(p)]  # fmt: skip
    assert not bare, "import the parts as drive_attention.<part>: " + "; ".join(bare)


def test_the_parts_are_the_top_level_folders_in_a_checkout() -> None:
    from drive_attention import agent, envs, models

    for part in (agent, envs, models):
        folder = Path(part.__file__).resolve().parent
        assert folder == ROOT / part.__name__.split(".")[1]


@pytest.mark.skipif(sys.platform == "win32", reason="the wheel check uses POSIX paths")
def test_a_fresh_install_imports_drive_attention_and_claims_no_generic_name(
    tmp_path: Path,
) -> None:
    """Built as a wheel and installed (its dependencies from this environment), away from the
    checkout: ``drive_attention`` and its parts import from the install, with the shipped agent's
    files; ``agent``, ``envs`` and ``models`` are left to the user."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("drive_attention-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"drive_attention"}, tops
    assert any(n.startswith("drive_attention/agent/pretrained/") and n.endswith(".safetensors")
               for n in names)  # fmt: skip
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    probe = (
        "import importlib.util, json, sys\n"
        "import drive_attention, drive_attention.envs, drive_attention.models\n"
        "from drive_attention.agent.evaluate.watch import PRETRAINED\n"
        "print(json.dumps([drive_attention.__file__, drive_attention.envs.__file__,\n"
        "    str(PRETRAINED), [importlib.util.find_spec(n) is None\n"
        "    for n in ('agent', 'envs', 'models')]]))\n"
    )
    # only the extracted wheel and the environment's dependencies: not the checkout, not the
    # editable install's finder (-S leaves site's .pth files unread)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *deps])}
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    package, envs_file, run, missing = json.loads(done.stdout.splitlines()[-1])
    assert package.startswith(str(site)) and envs_file.startswith(str(site / "drive_attention"))
    assert run.startswith(str(site / "drive_attention" / "agent" / "pretrained"))
    assert any(Path(run).rglob("*.safetensors")), "the shipped agent's weights are installed"
    assert missing == [True, True, True]
