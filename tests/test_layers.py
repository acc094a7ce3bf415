"""The apps' layers, read from every module's imports (those inside functions included).

From the bottom: ``common`` (plumbing any app may use), ``businesses``, ``outbox`` (the events outbox
every app below ``webhooks`` writes to), ``inference`` (the pool client and
its rows, below ``catalogs``, whose pool embeddings use it), ``catalogs``, ``agents``, ``regressions`` (the
suite that asks the agent), ``messaging``, ``webhooks`` (fans the outbox out to endpoints), ``dashboard``; ``config`` (settings, the ASGI/Celery entry points)
and ``devstack`` (the dev runner and the embedded services) are above them all: an app uses nothing of config but its settings
(``django.conf.settings``), and nothing of devstack. A module may import its own app and the apps below it,
never one above, and no two modules import each other, directly or through others (docs/architecture.md,
"Layers").
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    "common",
    "businesses",
    "outbox",
    "inference",
    "catalogs",
    "agents",
    "regressions",
    "messaging",
    "webhooks",
    "dashboard",
    "config",
    "devstack",
]


def _modules() -> dict[str, Path]:
    found = {}
    for app in LAYERS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {t for alias in node.names if (t := resolve(alias.name))}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = resolve(f"{node.module}.{alias.name}") or resolve(node.module)
                    if target:
                        targets.add(target)
        graph[name] = targets - {name}
    return graph


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_import_goes_up_a_layer_or_into_config() -> None:
    graph = _imports(_modules())
    wrong = set()
    for module, targets in graph.items():
        if module.startswith("config"):
            continue
        for target in targets:
            into_config = target.startswith("config") and target != "config.settings"
            if into_config or _layer(target) > _layer(module):
                wrong.add((module, target))
    assert sorted(wrong) == []


def test_no_import_cycle() -> None:
    graph = _imports(_modules())
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []
