"""The house rules as tests: ruff, mypy and the import contracts (all configured in
pyproject.toml), run from this venv, each asserting a clean exit and showing its report when
it is not; and the power_bench -> tests rule, which import-linter cannot see (tests is no
package)."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(600)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=550,
                          check=False)


def test_ruff_finds_nothing() -> None:
    done = run([sys.executable, "-m", "ruff", "check", "--no-cache", "."])
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = run([sys.executable, "-m", "mypy", "--no-incremental",
                "--cache-dir", "/dev/null"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_import_contracts_are_kept() -> None:
    # lint-imports has no ``python -m`` entry point; it is the console script of this venv.
    done = run([str(BIN / "lint-imports"), "--no-cache"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_server_contract_lists_every_module_of_pushsdk_but_the_codec_and_tcp() -> None:
    """import-linter cannot say "all of pushsdk but pushsdk.protocol and pushsdk.tcp (and the
    idle hub under it)", so the contract lists the others; a new pushsdk module must be added
    there (or moved beside the codec)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["source_modules"] == ["simulator.server"]]
    listed = {m for m in contract["forbidden_modules"] if m.startswith("pushsdk.")}
    modules = {f"pushsdk.{p.stem if p.is_file() else p.name}"
               for p in (ROOT / "pushsdk").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__" and p.stem != "__main__")
               or (p / "__init__.py").exists()}
    assert listed == modules - {"pushsdk.protocol", "pushsdk.tcp", "pushsdk._idle"}


def _test_module_names() -> set[str]:
    """Every name under which something of tests/ can be imported: ``tests``, and the folders'
    modules and packages, which the suite imports as top-level names (tests/ and its folders
    are put on sys.path)."""
    names = {"tests"}
    for path in (ROOT / "tests").rglob("*"):
        if "node_modules" in path.parts or "corpus" in path.parts:
            continue
        if path.suffix != ".py":
            continue
        top = path
        while (top.parent / "__init__.py").exists():  # a package's module: the package's name
            top = top.parent
        names.add(top.stem)
    return names - {"__main__", "__init__"}


def test_power_bench_imports_nothing_from_tests() -> None:
    forbidden = _test_module_names()
    found = []
    for path in sorted((ROOT / "power_bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                      for name in names if name.split(".")[0] in forbidden]
    assert found == []
