"""The import structure: the contracts in pyproject.toml's [tool.importlinter] (layers, the control core without the
deployment side, the GUI without the command line, a torch-free serving client, no cycles inside a package), checked
with import-linter as part of the suite, and no import cycle between any two modules at all (grimp).

Run the contracts by hand with `lint-imports` in the repository root: it names every offending import chain.
"""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("drivers", "recorder", "finetune", "serving", "workbench", "ui")


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    if run.returncode != 0:
        broken = out[out.find("Broken contracts"):] if "Broken contracts" in out else out
        summary = [line for line in out.splitlines() if line.rstrip().endswith(("BROKEN", "KEPT")) or "ignored import" in line]
        pytest.fail("import contracts of pyproject.toml [tool.importlinter] are broken (run `lint-imports` in the "
                    "repository root to see the same):\n" + "\n".join(summary) + "\n\n" + broken, pytrace=False)


def test_gui_contract_lists_every_command_line_module():
    """Contract 3 names the command-line modules one by one (import-linter has no `cli_*` pattern): a new one
    must join the list."""
    contract = next(c for c in _contracts() if c["type"] == "forbidden" and c["source_modules"] == ["ui"])
    cli = {f"workbench.{p.stem}" for p in (ROOT / "workbench").glob("cli*.py")} | {"workbench.__main__"}
    missing = sorted(cli - set(contract["forbidden_modules"]))
    assert not missing, (f"pyproject.toml contract {contract['name']!r}: add {missing} to its forbidden_modules")


def test_no_module_import_cycles():
    """No module reaches itself through its imports (function-level and type-checking imports included), within
    a package or across packages; the report names each cycle's chain."""
    import grimp

    present = [p for p in PACKAGES if (ROOT / p / "__init__.py").is_file()]
    graph = grimp.build_graph(*present, cache_dir=None)
    cycles, seen = [], set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = (importer, *back)  # importer -> imported -> ... -> importer
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                cycles.append(" -> ".join(cycle))
    if cycles:
        pytest.fail("import cycles (function-level imports count too; move the shared piece into a module both "
                    "can import, below both):\n  " + "\n  ".join(cycles), pytrace=False)
