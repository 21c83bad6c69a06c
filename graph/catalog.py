"""Loads process definitions from YAML folders and reports bad ones precisely.

Built-in definitions must load. A bad definition in the operator's own folder is
skipped and reported with file, line and field; it never stops steward starting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from graph.definitions import (
    WRITTEN,
    ActionStep,
    Compensation,
    ProcessDefinition,
    ReferenceProblem,
)

DEFINITION_SUFFIXES = (".yaml", ".yml")
log = logging.getLogger(__name__)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class DefinitionProblem:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class DefinitionError(Exception):
    def __init__(self, problems: list[DefinitionProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_definition(path: Path) -> ProcessDefinition:
    """Reads one YAML file; raises DefinitionError naming file, line and field."""
    if path.is_symlink() and not path.exists():
        problem = f"a link to {path.readlink()}, which is not there"
        raise DefinitionError([DefinitionProblem(path, None, "", problem)])
    try:
        if path.stat().st_size > MOST_BYTES:  # PyYAML took half a minute over 10 MB
            problem = f"larger than {MOST_BYTES // 1_000_000} MB: no definition is"
            raise DefinitionError([DefinitionProblem(path, None, "", problem)])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([DefinitionProblem(path, None, "", f"cannot read: {exc}")]) from None
    try:
        node = yaml.compose(text)
    except RecursionError:
        problem = f"not valid YAML here: nested more than {DEEPEST} levels deep"
        raise DefinitionError([DefinitionProblem(path, None, "", problem)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(
            [DefinitionProblem(path, line, "", f"not valid YAML: {problem}")]
        ) from None
    if node is None:
        raise DefinitionError([DefinitionProblem(path, None, "", "the file is empty")])
    lines: dict[Path_, int] = {}
    try:
        data = _to_python(node, (), lines, [MOST_NODES])
    except _Unreadable as exc:
        raise DefinitionError([DefinitionProblem(path, exc.line, "", str(exc))]) from None
    if not isinstance(data, dict):
        raise DefinitionError([DefinitionProblem(path, 1, "", "a definition must be a mapping")])
    try:
        return ProcessDefinition.model_validate(data, context=WRITTEN)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            loc = (
                cause.loc
                if isinstance(cause, ReferenceProblem)
                else _without_tag(error["loc"], data)
            )
            known = _known_prefix(loc, lines)
            message = error["msg"].removeprefix("Value error, ")
            named = loc if error["type"] == "missing" else known  # not in the file: its name
            problems.append(
                DefinitionProblem(
                    path, lines.get(known, 1), ".".join(str(p) for p in named), message
                )
            )
        raise DefinitionError(problems) from None


# What a definition may hold, counted as it is read: a few hundred nodes is a large one.
# Aliases are counted each time they are used, so that a file of aliases of aliases
# (a "billion laughs") stops here instead of taking the start with it.
MOST_NODES = 5_000
MOST_BYTES = 1_000_000
DEEPEST = 32


class _Unreadable(ValueError):
    """A value not read, with its line: one too many, too deep, or not a value."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _to_python(node: yaml.Node, path: Path_, lines: dict[Path_, int], left: list[int]) -> Any:
    line = node.start_mark.line + 1
    lines[path] = line
    left[0] -= 1
    if left[0] < 0:
        raise _Unreadable(f"the definition holds more than {MOST_NODES} values", line)
    if len(path) > DEEPEST:
        raise _Unreadable(f"nested more than {DEEPEST} levels deep", line)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: no name
                problem = "a key must be a name, not a list or a mapping"
                raise _Unreadable(problem, key_node.start_mark.line + 1)
            key = key_node.value
            if key in result:  # YAML keeps the last, silently: a step's second `next`
                first = lines[(*path, key)]
                named = ".".join(str(part) for part in (*path, key))
                problem = f"{named} is given twice (first on line {first})"
                raise _Unreadable(problem, key_node.start_mark.line + 1)
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _to_python(value_node, (*path, key), lines, left)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines, left) for i, item in enumerate(node.value)]
    try:  # as safe_load would, without writing it out and reading it again: that
        # refused an empty value (``default:``) as "found '<document end>'", on line 1
        return yaml.SafeLoader("").construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:  # a tag it refuses, a date 2026-13-01
        raise _Unreadable(f"not a value: {getattr(exc, 'problem', None) or exc}", line) from None


def _without_tag(loc: tuple[str | int, ...], data: dict[str, Any]) -> Path_:
    """Drops the step kind pydantic puts in the location of a tagged union's error."""
    if len(loc) > 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps")
        step = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        if isinstance(step, dict) and step.get("kind") == loc[2]:
            return (*loc[:2], *loc[3:])
    return tuple(loc)


def _known_prefix(loc: Path_, lines: dict[Path_, int]) -> Path_:
    """The deepest part of a pydantic error location that is a place in the file."""
    known: Path_ = ()
    for part in loc:
        candidate = (*known, part)
        if candidate in lines:
            known = candidate
    return known


@dataclass
class Catalog:
    """The definitions steward can run, by name; the newest load wins."""

    definitions: dict[str, ProcessDefinition] = field(default_factory=dict)
    problems: list[DefinitionProblem] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)
    # Each definition's version as loaded: the one the ledger records and runs start
    # with (hashing a definition costs more than the rest of starting a run).
    versions: dict[str, str] = field(default_factory=dict)
    # The built-ins a user definition of the same name replaces: name → its file.
    replaced: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, definition in self.definitions.items():
            self.versions.setdefault(name, definition.version)

    @classmethod
    def load(
        cls,
        builtin: Path,
        user: Path | None = None,
        actions: Mapping[str, frozenset[str]] | None = None,
    ) -> Catalog:
        """The built-in definitions, and the user's, which replace those of their names.

        With ``actions`` (each registered connector's, by name), a definition whose steps
        act through a connector nobody registered, or call an action it does not have, is
        skipped as a problem: it would fail only after its approval, and a /retry runs the
        version the run began with. A skipped one replaces nothing.
        """
        catalog = cls()
        for path in _yaml_files(builtin):
            definition = load_definition(path)  # ours: a bad one is a bug, so it raises
            if catalog._acts_as_registered(definition, path, actions):
                catalog.add(definition, path)
        builtins = set(catalog.definitions)
        if user is not None and user.is_dir():
            for path in _yaml_files(user):
                try:
                    definition = load_definition(path)
                    if not catalog._acts_as_registered(definition, path, actions):
                        continue
                    if (named := definition.name) in catalog.replaced or (
                        named in catalog.definitions and named not in builtins
                    ):  # which of the two would run would hang on the files' order
                        first = catalog.sources[named]
                        problem = f"{first.name} defines a process named {named!r} already"
                        raise DefinitionError([DefinitionProblem(path, None, "name", problem)])
                    if named in builtins:
                        catalog.replaced[named] = path
                    catalog.add(definition, path)
                except DefinitionError as exc:
                    catalog.problems.extend(exc.problems)
                except Exception as exc:  # one bad file never stops a start
                    log.exception("could not load %s", path)
                    problem = f"could not load it: {type(exc).__name__}: {exc}"
                    catalog.problems.append(DefinitionProblem(path, None, "", problem))
        return catalog

    def add(self, definition: ProcessDefinition, source: Path) -> None:
        self.definitions[definition.name] = definition
        self.sources[definition.name] = source
        self.versions[definition.name] = definition.version

    def _acts_as_registered(
        self,
        definition: ProcessDefinition,
        source: Path,
        actions: Mapping[str, frozenset[str]] | None,
    ) -> bool:
        """Whether every action of ``definition`` is registered; its problems if not."""
        if actions is None:
            return True
        unknown = list(_unknown_actions(definition, actions))
        lines = _lines(source) if unknown else {}
        problems = [
            DefinitionProblem(
                source, lines.get(_known_prefix(where, lines)), ".".join(map(str, where)), problem
            )
            for where, problem in unknown
        ]
        self.problems.extend(problems)
        return not problems

    def get(self, name: str) -> ProcessDefinition | None:
        return self.definitions.get(name)

    def __iter__(self) -> Iterator[ProcessDefinition]:
        return iter(sorted(self.definitions.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self.definitions)


def _unknown_actions(
    definition: ProcessDefinition, actions: Mapping[str, frozenset[str]]
) -> Iterator[tuple[Path_, str]]:
    """Where and why a step names a connector or an action nobody registered."""
    for index, step in enumerate(definition.steps):
        if not isinstance(step, ActionStep):
            continue
        calls: list[tuple[Path_, str, str]] = [(("steps", index), step.connector, step.action)]
        if isinstance(step.compensate, Compensation):
            undo = step.compensate
            calls.append(
                (("steps", index, "compensate"), undo.connector or step.connector, undo.action)
            )
        for where, connector, action in calls:
            known = actions.get(connector)
            if known is None:
                registered = ", ".join(sorted(actions)) or "none"
                problem = f"no connector {connector!r} (registered: {registered})"
                yield (*where, "connector"), problem
            elif action not in known:
                have = ", ".join(sorted(known))
                yield (*where, "action"), f"{connector} has no action {action!r} (it has {have})"


def _lines(path: Path) -> dict[Path_, int]:
    """The line of each place in the definition in ``path``, read again: a problem found
    once it loaded needs them; empty should the file have changed meanwhile."""
    lines: dict[Path_, int] = {}
    try:
        if node := yaml.compose(path.read_text(encoding="utf-8")):
            _to_python(node, (), lines, [MOST_NODES])
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError, _Unreadable):
        return {}
    return lines


def _yaml_files(folder: Path) -> Iterable[Path]:
    """The definition files in ``folder``, and a link among them to nothing (a folder of
    definitions moved away), which then cannot be read and is reported: it was passed
    over in silence, and its process was gone with no word of why."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in DEFINITION_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))
    )
