"""The house rules of `ulvm`, checked: each room imports only rooms at its level or below, and no two
modules import each other, directly or in a loop (lazy imports inside functions count too).

The levels (the README's "How the code is organised" describes each room):
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ulvm"

# room -> level; a room is a top-level module or subpackage of ulvm.
LEVELS = {
    "errors": 0, "io": 0, "version": 0, "paper": 0, "progress": 0,
    "config": 1,
    "cpp": 2, "ssm": 2, "metrics": 2, "runtime": 2,
    "model": 3, "data": 3,
    "baselines": 4,
    "registry": 5, "complexity": 5,
    "engine": 6,
    "deploy": 7, "sweeps": 7,
    "report": 8, "tryit": 8,
    "cli": 9, "__init__": 9, "__main__": 9,
}
LOWER_ROOMS = ("data", "model", "ssm", "cpp", "config")
ENGINE = ("engine", "deploy", "sweeps", "report")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ulvm module `path` imports, at the top or inside a function."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ulvm")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if target.startswith("ulvm"):   # `from pkg import submodule` imports the submodule, else pkg
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {name: {m for m in imported_modules(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_room_has_a_level():
    assert {room(m) for m in MODULES} <= set(LEVELS), {room(m) for m in MODULES} - set(LEVELS)


def test_rooms_import_only_their_level_or_below():
    wrong = [f"{m} (level {LEVELS[room(m)]}) imports {t} (level {LEVELS[room(t)]})"
             for m, targets in GRAPH.items() for t in targets
             if room(m) != room(t) and LEVELS[room(t)] > LEVELS[room(m)]]
    assert not wrong, "\n".join(wrong)


def test_lower_rooms_never_import_the_engine():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() if room(m) in LOWER_ROOMS
             for t in targets if room(t) in ENGINE]
    assert not wrong


def assert_no_cycle(graph: dict[str, set[str]], what: str) -> None:
    """Depth-first search of `graph` (node -> the nodes it imports); a loop fails, naming its path."""
    state: dict[str, str] = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError(f"{what}: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_import_cycles():
    assert_no_cycle(GRAPH, "import cycle")


def test_no_two_rooms_import_each_other():
    """Rooms form a one-way house: importing `ulvm.model.ultralight` runs `ulvm/model/__init__.py` too, so a
    lazy import from model back into baselines (which imports model) is a loop between rooms even when no two
    modules import each other directly. Checked on rooms, whatever their levels."""
    rooms = {}
    for module, targets in GRAPH.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    assert_no_cycle(rooms, "rooms in a loop")


def test_package_api_and_help_do_not_load_torch():
    """`import ulvm` and `ulvm --help` stay instant: torch loads only when something needs it."""
    import subprocess
    import sys
    code = ("import sys, ulvm, ulvm.cli; ulvm.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
