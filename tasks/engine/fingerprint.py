"""Code fingerprints for cache keys: a stage's key changes when the code it runs changes.

A stage's code = its task module plus every `mmcore` module that it imports, directly or through
other `mmcore` modules, at module level or inside a function (the tasks import stage code lazily),
or names in a string for a lazy registry to import ("mmcore.fusion.late_fusion:LateFusion"), plus
any project module the stage names in a string as code it ships (training's
"tasks.tracking.model_code", which runs wherever the logged model is loaded) with the `mmcore`
modules that one reaches.
Each file is parsed and dumped as an AST without docstrings, so comments, docstrings and
formatting do not count; renaming a variable or changing a constant does.

Replaces hand-bumped stage versions, which a landed commit forgot to bump.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

# The project root: the folder that holds mmcore/, tasks/ and flows/.
ROOT = Path(__file__).resolve().parents[2]
LIBRARY = "mmcore"


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    return tree


# A string naming a project module: a library module, as lazy registries hold them
# ("mmcore.fusion.gmu:GMU"), or code a stage ships ("tasks.tracking.model_code").
_MODULE_STRING = re.compile(rf"^({LIBRARY}|tasks)(\.\w+)+(:\w+)?$")


def _named_modules(tree: ast.AST) -> set[str]:
    """Every project module named in a string (imported later with importlib, or shipped)."""
    return {node.value.partition(":")[0] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and _MODULE_STRING.match(node.value)}


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement anywhere in the file may refer to."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..y import z
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # submodules
    return names


class _FactsCache:
    """Per-file (digest, imports), keyed by path, mtime and size: in memory, and in a JSON file
    when one is given, so a fresh process does not parse ~40 files again (0.3-0.6 s here)."""

    def __init__(self, file: Path | None):
        self.file, self.dirty = file, False
        try:
            self.entries = json.loads(file.read_text()) if file else {}
        except (OSError, ValueError):
            self.entries = {}

    def facts(self, path: Path, module: str) -> tuple[str, list[str], list[str]]:
        """(digest, imported modules, modules named in strings) of one file."""
        stat = path.stat()
        stamp = [stat.st_mtime_ns, stat.st_size, module]
        entry = self.entries.get(str(path))
        if entry is None or entry["stamp"] != stamp or "named" not in entry:
            entry = {"stamp": stamp, **_parse(path, module)}
            self.entries[str(path)] = entry
            self.dirty = True
        return entry["digest"], entry["imports"], entry["named"]

    def save(self) -> None:
        if self.file and self.dirty:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.file)
            self.dirty = False


@functools.lru_cache(maxsize=8)
def _cache(file: Path | None) -> _FactsCache:
    return _FactsCache(file)


def _parse(path: Path, module: str) -> dict:
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = sorted(_imported_modules(tree, module, path.name == "__init__.py"))
    named = sorted(_named_modules(tree))
    dump = ast.dump(_strip_docstrings(tree), include_attributes=False)
    return {"digest": hashlib.sha256(dump.encode()).hexdigest(), "imports": imports,
            "named": named}


def _closure(root: Path, module: str, cache: _FactsCache) -> dict[str, str]:
    """`module` and every library module it imports or names, transitively, and every other
    project module it names (code it ships): name -> file digest."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = None if name in seen else _module_file(root, name)
        if path is None:
            continue
        seen[name], imports, named = cache.facts(path, name)
        for imported in imports + named:
            parts = imported.split(".")
            # A package's __init__ runs before any of its submodules.
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)
                     if parts[0] == LIBRARY]
        # A shipped module runs on its own (MLflow loads the model's code from its file).
        todo += [n for n in named if n.split(".")[0] != LIBRARY]
    return seen


def module_digests(task_module: str, root: Path = ROOT, cache_file: Path | None = None,
                   ) -> dict[str, str]:
    """Each module a stage's code covers (its task module and the library modules it reaches),
    with the digest of its normalised source. `cache_file` keeps per-file digests between
    processes (keyed by mtime and size)."""
    cache = _cache(cache_file)
    files = _closure(root, task_module, cache)
    cache.save()
    return {name: files[name][:16] for name in sorted(files)}


def fingerprint(digests: dict[str, str]) -> str:
    """One digest for a stage's code, from `module_digests`."""
    blob = "".join(f"{name}:{value}\n" for name, value in sorted(digests.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
