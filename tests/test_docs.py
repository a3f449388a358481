"""The README and docs/ say only true things about names: every relative link leads to a file (and
an anchor to a heading), every path, module and config key they quote exists, and every `mmpipe`,
`make` and `python benchmarks/...` command they show is a real one with real flags and values.

Why: the pages quote the code's layout, and a reorganisation moved most of it (tasks/stage.py,
flows/serve.py, `fusion.loss`, `@newest` survived in the pages for a while). Read from the files
and from the `mmpipe` parser itself; nothing runs, nothing imports torch or prefect.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from flows.cli.commands import build_parser
from mmcore.config import FUSION_NAMES, RENAMED, STAGES, ConfigError, PipelineConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").glob("*.md")])
# The changelog names what no longer exists (old module paths, old config keys) on purpose; so
# do the parts of other pages marked as history (`_spans`).
HISTORY = {ROOT / "CHANGELOG.md"}
CURRENT = [p for p in PAGES if p not in HISTORY]
# Quoted names that look like config keys but are tags or metrics (tasks/tracking/run_summary.py).
NOT_CONFIG_KEYS = {"data.digest"}
CODE_DIRS = ("mmcore", "tasks", "flows", "tests", "benchmarks", "configs", "docs", ".ci")
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".json", ".cfg", ".txt")


@dataclass
class Snippet:
    """A piece of a page: an inline code span, a link target or one command line of a code block."""

    page: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text!r}"


def _split(page: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(prose lines, code block lines as (line, language, text)), both 1-based."""
    prose, code = [], []
    fence = None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        (code.append((number, fence, line)) if fence is not None else prose.append((number, line)))
    return prose, code


def _spans(page: Path, history: bool = True) -> list[Snippet]:
    """Inline code spans of the prose (single or double backticks); without `history`, none
    between `<!-- history -->` and `<!-- /history -->` (names of an older commit, on purpose)."""
    found, old = [], False
    for number, line in _split(page)[0]:
        old = (old or line.strip() == "<!-- history -->") and line.strip() != "<!-- /history -->"
        if old and not history:
            continue
        for match in re.finditer(r"(`+)(.+?)\1", line):
            found.append(Snippet(page, number, match.group(2).strip()))
    return found


def _links(page: Path) -> list[Snippet]:
    """Markdown link targets in the prose, code spans blanked first."""
    found = []
    for number, line in _split(page)[0]:
        line = re.sub(r"(`+).+?\1", "", line)
        for match in re.finditer(r"\]\(([^)\s]+)\)", line):
            found.append(Snippet(page, number, match.group(1)))
    return found


def _commands(page: Path) -> list[Snippet]:
    """Command lines of shell code blocks ("$ " prompts and "\\" continuations joined)."""
    found, pending = [], None
    for number, lang, line in _split(page)[1]:
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        text = line.strip().removeprefix("$ ")
        if pending is not None:
            pending.text = pending.text[:-1] + " " + text
        else:
            pending = Snippet(page, number, text)
        if not pending.text.endswith("\\"):
            found.append(pending)
            pending = None
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in _split(page)[0]:
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            yield base if n == 0 else f"{base}-{n}"


# --- links ----------------------------------------------------------------------------------------

def link_problem(link: Snippet) -> str | None:
    target = link.text
    if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    file = (link.page.parent / path).resolve() if path else link.page
    if not file.exists():
        shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        return f"{link.where()}: no such file {shown}"
    if anchor and file.suffix == ".md" and anchor not in set(anchors(file)):
        return (f"{link.where()}: {file.relative_to(ROOT)} has no heading with anchor #{anchor} "
                f"(it has: {', '.join(sorted(anchors(file)))})")
    return None


def test_every_relative_link_leads_to_a_file_and_heading():
    problems = [p for page in PAGES for link in _links(page) if (p := link_problem(link))]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / link.text.partition("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
    assert not missing, f"README.md links no docs page {missing} (add it to 'Where to go next')"


def test_slug_follows_github():
    assert slug("Fusion operators (`training.fusion`)") == "fusion-operators-trainingfusion"
    assert slug("What a crash leaves, and how the next run recovers") == \
        "what-a-crash-leaves-and-how-the-next-run-recovers"


# --- quoted paths, modules and config keys ------------------------------------------------------

def _top_level_names(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def module_problem(dotted: str) -> str | None:
    """`mmcore.io.parquet.read_dataset`: the longest prefix that is a module, then a name in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        file = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if file.exists():
            rest = parts[cut:]
            if rest and rest[0] not in _top_level_names(file):
                if file.name == "__init__.py":
                    return f"no module {'.'.join(parts[:cut + 1])}"
                return f"module {'.'.join(parts[:cut])} defines no {rest[0]}"
            return None
    return f"no module {parts[0]}" if len(parts) == 1 else f"no module {'.'.join(parts[:2])}"


def path_problem(text: str) -> str | None:
    """`tasks/engine/keys.py`, `tasks/engine/keys.py:stage_key`, `mmcore/fusion/`."""
    path, _, name = text.partition(":")
    file = ROOT / path
    if not file.exists():
        return f"no such file or folder {path}"
    name = name.strip()
    if name and file.suffix == ".py" and name.split(".")[0] not in _top_level_names(file):
        return f"{path} defines no {name}"
    return None


def _config_leaves(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> dict[str, bool]:
    """Every config key as `section.key`, True for those that are sections themselves."""
    keys = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        nested = isinstance(kind, type) and issubclass(kind, BaseModel)
        keys[prefix + name] = nested
        if nested:
            keys.update(_config_leaves(kind, f"{prefix}{name}."))
    return keys


CONFIG_KEYS = _config_leaves()
SECTIONS = {k for k, nested in CONFIG_KEYS.items() if nested and "." not in k}


def config_key_problem(text: str) -> str | None:
    """A quoted `section.key` or `section.key=value` names a current key (old names are errors
    here, though they still load with a warning)."""
    key = text.partition("=")[0]
    section = key.split(".")[0]
    if "." not in key or key in NOT_CONFIG_KEYS or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", key):
        return None
    if section in RENAMED:
        return f"config section '{section}' was renamed '{RENAMED[section]}'"
    if section in SECTIONS and key not in CONFIG_KEYS and not any(
            key.startswith(k + ".") for k in CONFIG_KEYS if k.count(".") and k != key):
        return f"no config key {key}"
    return None


def quoted_name_problem(span: Snippet) -> str | None:
    text = span.text
    if re.fullmatch(rf"(?:{'|'.join(map(re.escape, CODE_DIRS))})/[\w./-]*(?::\s*\w[\w.]*)?", text):
        path = text.partition(":")[0]
        if path.endswith(FILE_SUFFIXES) or path.split("/")[0] in ("mmcore", "tasks", "flows"):
            return path_problem(text)
    if re.fullmatch(r"(?:mmcore|tasks|flows)(?:\.\w+)+", text):
        return module_problem(text)
    return config_key_problem(text)


def test_quoted_paths_modules_and_config_keys_exist():
    problems = [f"{span.where()}: {problem}" for page in CURRENT
                for span in _spans(page, history=False) if (problem := quoted_name_problem(span))]
    assert not problems, "names in the docs that the code does not have:\n" + "\n".join(problems)


def test_the_config_reference_lists_every_key_and_only_real_ones():
    page = ROOT / "docs" / "configuration.md"
    listed: set[str] = set()
    for _, line in _split(page)[0]:
        if line.startswith("| `"):
            for span in re.findall(r"`([^`]+)`", line.split("|")[1]):
                stem, _, braces = span.partition(".{")
                listed |= ({f"{stem}.{k.strip()}" for k in braces.rstrip("}").split(",")}
                           if braces else {span})
    unknown = sorted(k for k in listed if k not in CONFIG_KEYS)
    assert not unknown, f"docs/configuration.md lists keys the config does not have: {unknown}"
    covered = {k for k in CONFIG_KEYS if k in listed or any(k.startswith(p + ".") for p in listed)}
    missing = sorted(k for k, nested in CONFIG_KEYS.items() if not nested and k not in covered)
    assert not missing, f"docs/configuration.md does not describe config keys {missing}"


# --- commands -----------------------------------------------------------------------------------

PARSER = build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _command_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str] | str:
    """The (sub)parser `argv` reaches and its name, or what is wrong."""
    parser, name = PARSER, "mmpipe"
    for word in argv:
        if word.startswith("-"):
            continue
        subs = _subparsers(parser)
        if not subs:
            break
        if word not in subs:
            return f"'{name}' has no subcommand '{word}' (it has: {', '.join(subs)})"
        parser, name = subs[word], f"{name} {word}"
    return parser, name


def _parse(argv: list[str]) -> str | None:
    """argparse's own complaint about `argv`, if it has one."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            PARSER.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                return err.getvalue().strip().splitlines()[-1]
    return None


def _values_problem(args: argparse.Namespace) -> str | None:
    """What the parser accepts but the command would reject: config, stages, grid, fusions."""
    config = getattr(args, "config", None)
    if config and not (ROOT / config).exists():
        return f"--config {config}: no such file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # an old key is not a documented one
            if hasattr(args, "overrides"):
                load_config(ROOT / config if config else None, args.overrides)
            for item in getattr(args, "grid", []):
                key, _, values = item.partition("=")
                for value in values.split(","):
                    _check_setting(f"--grid {item}", key, value)
    except (ConfigError, FutureWarning) as exc:
        return str(exc)
    stages = [*(args.stages.split(",") if getattr(args, "stages", None) else []),
              *getattr(args, "refresh", [])]
    if unknown := [s for s in stages if s.strip() not in STAGES]:
        return f"unknown stage(s) {unknown}; stages are {list(STAGES)}"
    fusions = getattr(args, "fusions", "all")
    if fusions != "all" and (unknown := [f for f in fusions.split(",") if f not in FUSION_NAMES]):
        return f"unknown fusion operator(s) {unknown}"
    return None


def _check_setting(where: str, key: str, value: object) -> None:
    """One `key=value` as the config would take it; ConfigError (or a FutureWarning for an old
    name) saying `where` otherwise."""
    try:
        load_config(overrides=[f"{key}={value}"])
    except (ConfigError, FutureWarning) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_block_problem(text: str, tmp: Path) -> str | None:
    """A YAML config shown in a page loads as it is, its `sweep:` grid included."""
    tree = yaml.safe_load(text)
    if not isinstance(tree, dict) or not set(tree) <= {*CONFIG_KEYS, "sweep"}:
        return None  # not a config file
    (tmp / "shown.yaml").write_text(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            load_config(tmp / "shown.yaml")
            for key, values in (tree.get("sweep") or {}).get("grid", {}).items():
                for value in values:
                    _check_setting(f"sweep.grid.{key}", key, value)
    except (ConfigError, FutureWarning) as exc:
        return str(exc)
    return None


def test_every_config_file_shown_loads(tmp_path):
    problems = []
    for page in CURRENT:
        blocks: dict[int, list[str]] = {}
        for number, lang, line in _split(page)[1]:
            if lang in ("yaml", "yml"):
                start = next((s for s, b in blocks.items() if s + len(b) == number), number)
                blocks.setdefault(start, []).append(line)
        for number, lines in blocks.items():
            if problem := config_block_problem("\n".join(lines), tmp_path):
                problems.append(f"{page.relative_to(ROOT)}:{number}: {problem}")
    assert not problems, "configs in the docs that do not load:\n" + "\n".join(problems)


def mmpipe_problem(command: str, full: bool) -> str | None:
    """A `mmpipe ...` command: its subcommand and flags exist; with `full` (a code block line),
    it also parses and its values are valid. `...` stands for elided arguments."""
    words = [w for w in shlex.split(command, comments=True)[1:] if w != "..."]
    if not full:  # prose: `mmpipe compare [--seeds 0 1 2] [--fusions all|a,b]`
        words = [w.strip("[]") for w in words if not re.search(r"[|<>A-Z]", w.strip("[]"))
                 or w.strip("[]").startswith("--")]
    reached = _command_parser([w for w in words if not w.startswith("-")][:2])
    if isinstance(reached, str):
        return reached
    parser, name = reached
    known = {*parser._option_string_actions, *PARSER._option_string_actions}
    flags = [w.partition("=")[0] for w in words if w.startswith("--")]
    if unknown := [f for f in flags if f not in known]:
        return f"'{name}' has no option {', '.join(unknown)}"
    if not full:
        return None
    if problem := _parse(words):
        return problem
    return _values_problem(PARSER.parse_args(words))


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w.-]+):(?!=)", text, re.M))


def command_problem(snippet: Snippet, full: bool) -> str | None:
    text = snippet.text
    if text.startswith("mmpipe "):
        return mmpipe_problem(text, full)
    if match := re.match(r"make ([\w-]+)", text):
        target = match.group(1)
        return None if target in make_targets() else f"the Makefile has no target '{target}'"
    if match := re.match(r"(?:\.venv/bin/)?python (benchmarks/\S+\.py)", text):
        return None if (ROOT / match.group(1)).exists() else f"no script {match.group(1)}"
    return None


def test_every_command_shown_is_a_real_one():
    problems = []
    for page in CURRENT:
        for snippet in _commands(page):
            if problem := command_problem(snippet, full=True):
                problems.append(f"{snippet.where()}: {problem}")
        for span in _spans(page):
            if problem := command_problem(span, full=False):
                problems.append(f"{span.where()}: {problem}")
    assert not problems, "commands in the docs that would fail:\n" + "\n".join(problems)


@pytest.mark.parametrize(("command", "complaint"), [
    ("mmpipe run --refresh fusion", "unknown stage"),
    ("mmpipe status --set fusion.loss=infonce", "is now 'shared_space'"),
    ("mmpipe sweep --grid training.fusion=late,nope", "training.fusion"),
    ("mmpipe run --stage training", "no option --stage"),
    ("mmpipe serve --now", "no option --now"),
    ("mmpipe data fetch mnist", "no subcommand 'fetch'"),
    ("mmpipe run --config configs/nope.yaml", "no such file"),
])
def test_a_wrong_command_is_named_with_the_reason(command, complaint):
    problem = mmpipe_problem(command, full=True)
    assert problem and complaint in problem, problem


def test_a_wrong_name_is_named_with_the_reason():
    assert "no such file" in path_problem("tasks/stage.py")
    assert "defines no stage_key" in path_problem("tasks/engine/skeleton.py:stage_key")
    assert "no module flows.serve" in module_problem("flows.serve.main")
    assert "defines no read_tables" in module_problem("mmcore.io.parquet.read_tables")
    assert "renamed 'shared_space'" in config_key_problem("fusion.epochs")
    assert config_key_problem("training.fusion") is None
    assert "no target 'tests'" in command_problem(Snippet(ROOT, 1, "make tests"), full=True)
    assert "no option --sede" in mmpipe_problem("mmpipe compare [--sede 0 1]", full=False)
