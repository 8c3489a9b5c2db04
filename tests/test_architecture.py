"""Imports point one way (DESIGN.md): the fitters never import the registry above them, and no
two fitter modules import each other."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIT = ROOT / "planner" / "fit"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_fitters_never_import_the_registry_or_the_planner():
    for path in FIT.glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("planner.fitter", "planner.planlaws", "planner.recommend",
                                                           "planner.candidates", "planner.assumptions",
                                                           "planner.lawcache"))}
        assert not bad, f"{path.name} imports {sorted(bad)}: the registry (planner.fitter) sits on top"


def test_no_import_cycle_between_fitter_modules():
    mods = {p.stem for p in FIT.glob("*.py") if p.stem != "__init__"}
    graph = {m: {x.split(".")[2] for x in _imports(FIT / f"{m}.py")
                 if x.startswith("planner.fit.") and x.split(".")[2] in mods} - {m} for m in mods}
    graph = {m: deps | {x.split(".")[-1] for x in _imports(FIT / f"{m}.py") if x.startswith("planner.fit.")
                        and x.split(".")[-1] in mods} - {m} for m, deps in graph.items()}

    def reach(start, seen):
        for d in graph[start]:
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    for m in mods:
        assert m not in reach(m, set()), f"planner/fit/{m}.py is part of an import cycle"


def test_planner_stays_free_of_torch_and_plotly():
    for path in (ROOT / "planner").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "plotly")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_readme_architecture_table_names_every_module():
    """A newcomer finds every module from the README's architecture section: each module of the
    installed packages is named there, as ``name.py`` or as `name` (a folder's modules in its row)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    modules = [ROOT / "cli.py"] + [p for pkg in ("commands", "planner", "trainer", "reports")
                                   for p in (ROOT / pkg).rglob("*.py") if p.stem != "__init__"]
    missing = [str(p.relative_to(ROOT)) for p in modules
               if f"{p.name}" not in section and f"`{p.stem}`" not in section]
    assert len(modules) > 40 and not missing, f"not named in the README's architecture section: {missing}"
