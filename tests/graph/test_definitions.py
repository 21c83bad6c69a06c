"""Process definitions: the built-ins, precise problem reports, the catalog, and the helpers.

Covers ``graph.definitions`` and ``graph.catalog`` (loading YAML, reporting file/line/field),
plus the small languages definitions use: ``graph.conditions``, ``graph.templating`` and
``graph.durations``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.app import Steward
from bot.settings import load_settings
from graph import catalog as catalog_module
from graph.catalog import MOST_NODES, Catalog, DefinitionError, DefinitionProblem, load_definition
from graph.conditions import Condition, ConditionError
from graph.definitions import ActionStep, ApprovalStep, ProcessDefinition
from graph.durations import describe_duration, parse_duration
from graph.inputs import InputSpec
from graph.templating import placeholders, render
from processes import BUILTIN_DIR

BUILTIN_FILES = sorted(BUILTIN_DIR.glob("*.yaml"))

GOOD = """\
name: demo
title: Demo
description: A small process for tests.
inputs:
  email:
    type: email
    question: Who should get it?
steps:
  - id: draft
    kind: agent
    output: body
    template: Hello {email}
  - id: approve
    kind: approval
    summary: Send the note to {email}
    text: "{body}"
  - id: send
    kind: action
    gate: approve
    connector: outbox
    action: send_email
    with:
      to: "{email}"
      body: "{body}"
"""


def write(folder: Path, text: str, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line containing ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def only_problem(path: Path) -> DefinitionProblem:
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    problems = caught.value.problems
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.file == path
    assert str(problem) in str(caught.value)
    return problem


def assert_at(problem: DefinitionProblem, path: Path, line: int, field: str) -> None:
    assert (problem.line, problem.field) == (line, field), problem
    assert f"{path}:{line}" in str(problem)


# --- built-ins --------------------------------------------------------------------------


def test_there_are_builtin_definitions() -> None:
    assert len(BUILTIN_FILES) >= 3


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_loads_with_typed_inputs(path: Path) -> None:
    definition = load_definition(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert definition.inputs
    assert all(isinstance(spec, InputSpec) for spec in definition.inputs.values())
    assert all("type" in spec for spec in raw["inputs"].values()), "every input declares a type"


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_gates_every_action_with_an_earlier_approval(path: Path) -> None:
    definition = load_definition(path)
    ids = [step.id for step in definition.steps]
    actions = [s for s in definition.steps if isinstance(s, ActionStep)]
    assert any(isinstance(s, ApprovalStep) for s in definition.steps)
    assert actions
    for action in actions:
        assert isinstance(definition.step(action.gate), ApprovalStep)
        assert ids.index(action.gate) < ids.index(action.id)
        assert action in definition.actions_behind(action.gate)


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_version_is_stable(path: Path) -> None:
    first, second = load_definition(path), load_definition(path)
    assert first.version == second.version
    assert len(first.version) == 16
    int(first.version, 16)


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_version_changes_when_the_definition_changes(path: Path, tmp_path: Path) -> None:
    original = load_definition(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["steps"][0]["title"] = "A different title"
    changed = load_definition(write(tmp_path, yaml.safe_dump(data)))
    assert changed.name == original.name
    assert changed.version != original.version


def test_builtins_have_distinct_versions() -> None:
    versions = {load_definition(p).version for p in BUILTIN_FILES}
    assert len(versions) == len(BUILTIN_FILES)


def test_a_good_definition_loads(tmp_path: Path) -> None:
    definition = load_definition(write(tmp_path, GOOD))
    assert isinstance(definition, ProcessDefinition)
    assert [s.id for s in definition.steps] == ["draft", "approve", "send"]
    send = definition.step("send")
    assert isinstance(send, ActionStep)
    assert send.params == {"to": "{email}", "body": "{body}"}
    approve = definition.step("approve")
    assert isinstance(approve, ApprovalStep)
    assert approve.expiry == timedelta(hours=72)


# --- bad definitions: file, line and field ----------------------------------------------


def test_invalid_yaml_reports_the_line_of_the_syntax_error(tmp_path: Path) -> None:
    text = GOOD.replace("description: A small", "description: broken: A small")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "broken:"), "")
    assert "not valid YAML" in problem.message


def test_empty_file_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing here\n")
    assert "empty" in only_problem(path).message


@pytest.mark.parametrize(
    ("wrong", "field", "said"),
    [
        ("title:", "title", "Input should be a valid string"),  # left empty
        ("title: 2026-13-01", "", "not a value: month must be in 1..12"),
        ("title: !!python/name:os.system", "", "not a value: could not determine a constructor"),
    ],
)
def test_a_value_yaml_cannot_read_is_named_with_its_line(
    tmp_path: Path, wrong: str, field: str, said: str
) -> None:
    """An empty value was "found '<document end>'" on line 1 of nothing the operator
    wrote, and a date of no calendar had no line at all."""
    text = GOOD.replace("title: Demo", wrong)
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, wrong), field)
    assert problem.message.startswith(said)


def test_a_key_given_twice_is_a_problem_not_the_last_one_kept(tmp_path: Path) -> None:
    """YAML keeps the last of two, silently: a gate's first `on_reject` went unread, and
    two inputs of one name were one, of the second's type."""
    first = '    text: "{body}"\n'
    text = GOOD.replace(first, first + "    text: Hello\n")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "text: Hello"), "")
    said = f"steps.1.text is given twice (first on line {line_of(text, first.strip())})"
    assert problem.message == said


def test_a_key_that_is_a_list_is_a_problem_on_its_line(tmp_path: Path) -> None:
    """It was "could not load it: TypeError: unhashable type: 'list'", with no line."""
    text = GOOD.replace("inputs:\n", "inputs:\n  ? [a, b]\n  : {type: string}\n")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "? [a, b]"), "")
    assert problem.message == "a key must be a name, not a list or a mapping"


@pytest.mark.parametrize("alias", ['""', '" "', '"-"'])
def test_an_alias_without_a_word_is_a_problem(tmp_path: Path, alias: str) -> None:
    """An empty alias is found in every message: each would route to the process."""
    text = GOOD.replace("inputs:\n", f"aliases: [note, {alias}]\ninputs:\n", 1)
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "aliases:"), "aliases")
    assert "holds no word" in problem.message


def test_an_input_name_ending_in_a_newline_is_a_problem(tmp_path: Path) -> None:
    text = GOOD.replace("  email:\n", '  "email\\n":\n', 1)
    path = write(tmp_path, text)
    assert "must be lower_snake_case" in only_problem(path).message


def test_a_file_over_a_megabyte_is_a_problem_read_no_further(tmp_path: Path) -> None:
    """PyYAML read a 10 MB definition for up to half a minute, holding up the start."""
    path = write(tmp_path, GOOD.replace("title: Demo", f"title: {'x' * 1_000_000}"))
    assert only_problem(path).message == "larger than 1 MB: no definition is"


def test_unknown_step_kind(tmp_path: Path) -> None:
    text = GOOD + "  - id: beam\n    kind: teleport\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "id: beam"), "steps.3")
    assert "teleport" in problem.message


def test_missing_required_field_points_at_the_step(tmp_path: Path) -> None:
    text = GOOD + "  - id: second_gate\n    kind: approval\n    risk: low\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.field.startswith("steps.3")
    assert problem.line == line_of(text, "id: second_gate")
    assert f"{path}:{problem.line}" in str(problem)
    assert "required" in problem.message.lower()


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("title:"))
    path = write(tmp_path, text + "\n")
    problem = only_problem(path)
    assert problem.field == "title" and problem.message == "Field required"
    assert str(problem) == f"{path}:1: title: Field required"


def test_the_readmes_example_process_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("## Writing a process", 1)[1].split("```yaml\n", 1)[1]
    path = tmp_path / "quote_followup.yaml"
    path.write_text(example.split("```", 1)[0])
    definition = load_definition(path)
    assert definition.name == "quote_followup"
    assert definition.inputs["client"].question == "Which client?"


def test_the_readme_names_every_field_a_definition_requires() -> None:
    """It named no title, and a definition written from its list was skipped for the
    lack of one."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = readme.split("YAML definitions (", 1)[1].split(")", 1)[0]
    for name, field in ProcessDefinition.model_fields.items():
        if field.is_required():
            assert name in listed


def test_action_without_connector_points_at_the_step(tmp_path: Path) -> None:
    text = GOOD.replace("    connector: outbox\n", "")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.field in ("steps.2", "steps.2.connector")
    assert problem.line == line_of(text, "id: send")
    assert "required" in problem.message.lower()


def test_action_without_connector_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("    connector: outbox\n", "")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.field.startswith("steps.2")
    assert "required" in problem.message.lower()


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("summary: Send the note to {email}", "summary: Send it to {emial}", "steps.1.summary"),
        ('text: "{body}"', 'text: "{Body}"', "steps.1.text"),
        ('body: "{body}"', 'body: "{bdy}"', "steps.2.with.body"),
        ("template: Hello {email}", "template: Hello {who}", "steps.0.template"),
    ],
)
def test_a_placeholder_s_mistake_names_its_field_and_line(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """It named the step alone, on the step's first line."""
    text = GOOD.replace(old, new)
    path = write(tmp_path, text)
    assert_at(only_problem(path), path, line_of(text, new), field)


def test_a_wait_s_duration_mistake_names_its_field_and_line(tmp_path: Path) -> None:
    text = GOOD + "  - id: later\n    kind: wait\n    for: 3 fortnights\n"
    path = write(tmp_path, text)
    assert_at(only_problem(path), path, line_of(text, "for: 3"), "steps.3.for")


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        ("pays: email\n    event: paid", "step 'later' pays 'email', which is no money input"),
        ("pays: fee\n    for: 3d", "`pays` needs the `event` that pays"),
    ],
)
def test_a_wait_pays_a_money_input_on_an_event(tmp_path: Path, wait: str, message: str) -> None:
    text = GOOD.replace("inputs:\n", "inputs:\n  fee: {type: money}\n") + (
        f"  - id: later\n    kind: wait\n    {wait}\n"
    )
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert message in problem.message


def test_what_a_payment_fills_is_known_to_the_steps_after_it(tmp_path: Path) -> None:
    text = GOOD.replace("inputs:\n", "inputs:\n  fee: {type: money}\n") + (
        "  - id: later\n    kind: wait\n    event: paid\n    pays: fee\n"
        "  - id: done\n    kind: branch\n    if: fee_owed == 0 and fee_paid != None\n"
        "    then: end\n    else: draft\n"
    )
    assert load_definition(write(tmp_path, text)).amounts == ["fee", "fee_paid", "fee_owed"]


def test_a_step_named_end_is_a_problem(tmp_path: Path) -> None:
    """It ran when the step before fell through to it, and never when a step went to it
    by name: `next: end` finishes the run."""
    text = GOOD + "  - id: end\n    kind: agent\n    output: thanks\n    template: Thanks\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "id: end"), "steps.3.id")
    assert problem.message == "'end' is where a run finishes: name the step otherwise"
    stored = yaml.safe_load(text)  # a run that began with one goes on as it began
    assert ProcessDefinition.model_validate(stored).steps[3].id == "end"


def test_unparseable_branch_condition(tmp_path: Path) -> None:
    text = GOOD + "  - id: check\n    kind: branch\n    if: \"__import__('os')\"\n    then: end\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "if:"), "steps.3.if")
    assert "__import__" in problem.message


def test_a_branch_s_next_is_a_problem_not_ignored(tmp_path: Path) -> None:
    """It was never read, even to a step that does not exist: a branch meant to go on to
    it when its condition failed ended the run there instead."""
    text = GOOD + "  - id: check\n    kind: branch\n    if: email\n    then: end\n    next: draft\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "next: draft"), "steps.3.next")
    assert problem.message == "a branch goes on by `then` and `else`, not `next`"
    stored = yaml.safe_load(text)  # a run that began with one goes on as it began
    assert ProcessDefinition.model_validate(stored).steps[3].next == "draft"


def test_a_condition_nested_too_deeply_is_a_problem_on_its_line(tmp_path: Path) -> None:
    """Python's parser gave up with a RecursionError, reported with no line or field."""
    deep = "not " * 5000 + "email"
    text = GOOD + f"  - id: check\n    kind: branch\n    if: {deep}\n    then: end\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "if: not"), "steps.3.if")
    assert problem.message.endswith("is nested too deeply")


def test_branch_condition_syntax_error(tmp_path: Path) -> None:
    text = GOOD + "  - id: check\n    kind: branch\n    if: email ==\n    then: end\n"
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "if:"), "steps.3.if")
    assert "cannot parse" in problem.message


def test_bad_duration(tmp_path: Path) -> None:
    text = GOOD.replace('    text: "{body}"\n', '    text: "{body}"\n    expires_in: soon\n')
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "expires_in:"), "steps.1.expires_in")
    assert "soon" in problem.message


def test_choice_input_without_choices(tmp_path: Path) -> None:
    text = GOOD.replace("inputs:\n", "inputs:\n  package:\n    type: choice\n")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "package:"), "inputs.package")
    assert "choices" in problem.message


def test_unknown_key_in_a_step(tmp_path: Path) -> None:
    text = GOOD.replace("    summary:", "    colour: red\n    summary:")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "colour:"), "steps.1.colour")


def _gate_after_action() -> str:
    head = GOOD[: GOOD.index("  - id: approve")]
    approve = GOOD[GOOD.index("  - id: approve") : GOOD.index("  - id: send")]
    send = GOOD[GOOD.index("  - id: send") :]
    return head + send + approve


def _changed(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


# Cross-reference mistakes: (name, text, words the message must contain,
# a line inside the offending step, the index of that step).
CROSS_REFERENCES: list[tuple[str, str, list[str], str, int]] = [
    (
        "unknown_placeholder",
        _changed("summary: Send the note to {email}", "summary: Send the note to {nope}"),
        ["{nope}", "approve"],
        "{nope}",
        1,
    ),
    (
        "unknown_next",
        _changed('    text: "{body}"\n', '    text: "{body}"\n    next: nowhere\n'),
        ["nowhere", "approve"],
        "next: nowhere",
        1,
    ),
    (
        "duplicate_ids",
        _changed("  - id: send\n", "  - id: draft\n"),
        ["unique", "draft"],
        "gate: approve",
        2,
    ),
    (
        "gate_not_an_approval",
        _changed("    gate: approve", "    gate: draft"),
        ["not an approval step", "draft"],
        "gate: draft",
        2,
    ),
    ("action_before_its_gate", _gate_after_action(), ["must come after its gate"], "gate:", 1),
    (  # it overwrote the input for every step after: the email went to the draft's text
        "output_named_as_an_input",
        GOOD.replace("output: body", "output: email").replace("{body}", "{email}"),
        ["'email'", "the name of an input", "draft"],
        "output: email",
        0,
    ),
    (
        "output_named_as_what_steward_fills_in",
        GOOD.replace("output: body", "output: today").replace("{body}", "{today}"),
        ["'today'", "one steward fills in"],
        "output: today",
        0,
    ),
]


@pytest.mark.parametrize(
    ("text", "words"),
    [(c[1], c[2]) for c in CROSS_REFERENCES],
    ids=[c[0] for c in CROSS_REFERENCES],
)
def test_cross_reference_mistakes_are_reported(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    problem = only_problem(path)
    for word in words:
        assert word in problem.message
    assert str(path) in str(problem)


@pytest.mark.parametrize(
    ("text", "needle", "index"),
    [(c[1], c[3], c[4]) for c in CROSS_REFERENCES],
    ids=[c[0] for c in CROSS_REFERENCES],
)
def test_cross_reference_mistakes_point_at_the_step(
    tmp_path: Path, text: str, needle: str, index: int
) -> None:
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.field.startswith(f"steps.{index}")
    expected = line_of(text, needle)
    step_start = max(
        n
        for n, line in enumerate(text.splitlines(), start=1)
        if line.startswith("  - id:") and n <= expected
    )
    # The step's first line, or the offending field's own line where there is one.
    assert problem.line in (step_start, expected)
    assert f"{path}:{problem.line}" in str(problem)


def test_unknown_placeholder_in_compensate_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("    with:\n", "    compensate: apologise to {nope}\n    with:\n")
    problem = only_problem(write(tmp_path, text))
    assert "{nope}" in problem.message


def test_reserved_or_badly_named_input_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("inputs:\n", "inputs:\n  today:\n    type: date\n")
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.field == "inputs"
    assert "today" in problem.message


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ("  greeting:\n    default: Dear {email}\n  email:\n    type: email\n", "{email}"),
        ("  email:\n    type: email\n  greeting:\n    default: Dear {who}\n", "{who}"),
    ],
    ids=["an input after it", "no input"],
)
def test_a_default_may_name_only_an_input_listed_before_it(
    tmp_path: Path, inputs: str, named: str
) -> None:
    text = GOOD.replace("inputs:\n  email:\n    type: email\n", f"inputs:\n{inputs}")
    problem = only_problem(write(tmp_path, text))
    assert problem.field == "inputs"
    assert named in problem.message and "greeting" in problem.message


def test_a_default_fills_in_the_inputs_before_it() -> None:
    spec = InputSpec(default="{client} team")
    assert spec.default_for({"client": "Acme Corp"}) == "Acme Corp team"
    assert InputSpec(type="integer", default=3).default_for({"client": "Acme"}) == 3


# --- the catalog ------------------------------------------------------------------------


def test_catalog_loads_the_builtins() -> None:
    catalog = Catalog.load(BUILTIN_DIR)
    assert len(catalog) == len(BUILTIN_FILES)
    assert catalog.problems == []
    assert {d.name for d in catalog} == {load_definition(p).name for p in BUILTIN_FILES}
    assert [d.name for d in catalog] == sorted(d.name for d in catalog)


def test_a_definition_too_large_or_too_deep_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    """Aliases of aliases (a "billion laughs") and deep nesting took the start with them."""
    user = tmp_path / "processes"
    user.mkdir()
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n"
        for a, b in zip("abcdef", "bcdefg", strict=True)
    )
    write(user, laughs, "laughs.yaml")
    write(user, "name: deep\nsteps: " + "[" * 3000 + "]" * 3000 + "\n", "deep.yaml")
    write(user, "name: deeper\nsteps: " + "[" * 40 + "]" * 40 + "\n", "deeper.yaml")

    catalog = Catalog.load(BUILTIN_DIR, user)

    said = {p.file.name: p.message for p in catalog.problems}
    assert said["laughs.yaml"] == f"the definition holds more than {MOST_NODES} values"
    assert "nested more than" in said["deep.yaml"] and "nested more than" in said["deeper.yaml"]
    assert len(catalog) == len(BUILTIN_FILES)


def test_a_user_definition_that_breaks_the_loader_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "processes"
    user.mkdir()
    write(user, GOOD, "demo.yaml")

    def broken(path: Path) -> ProcessDefinition:
        if path.parent == user:
            raise OverflowError("a bug in reading it")
        return load(path)

    load = catalog_module.load_definition
    monkeypatch.setattr(catalog_module, "load_definition", broken)
    catalog = Catalog.load(BUILTIN_DIR, user)
    (problem,) = catalog.problems
    assert problem.message == "could not load it: OverflowError: a bug in reading it"


def test_catalog_skips_a_broken_user_definition(tmp_path: Path) -> None:
    user = tmp_path / "processes"
    user.mkdir()
    good = write(user, GOOD.replace("name: demo", "name: my_process"), "good.yaml")
    broken = write(user, GOOD.replace("    connector: outbox\n", ""), "broken.yaml")
    write(user, "not: a definition\n", "notes.txt")

    catalog = Catalog.load(BUILTIN_DIR, user)

    mine = catalog.get("my_process")
    assert mine is not None
    assert catalog.sources["my_process"] == good
    assert len(catalog) == len(BUILTIN_FILES) + 1
    assert catalog.problems
    assert {p.file for p in catalog.problems} == {broken}
    assert catalog.get("demo") is None


def test_a_link_to_no_definition_is_reported(tmp_path: Path) -> None:
    """A definition linked from a folder that moved was passed over in silence: its process
    was gone from /processes with no word of why."""
    user = tmp_path / "processes"
    user.mkdir()
    moved, gone = user / "quote.yaml", tmp_path / "elsewhere" / "quote.yaml"
    moved.symlink_to(gone)
    (user / "drafts.yaml").mkdir()  # a folder named so is no definition, nor a problem

    catalog = Catalog.load(BUILTIN_DIR, user)

    (problem,) = catalog.problems
    assert problem.file == moved
    assert problem.message == f"a link to {gone}, which is not there"
    assert len(catalog) == len(BUILTIN_FILES)


def test_user_definition_overrides_a_builtin(tmp_path: Path) -> None:
    user = tmp_path / "processes"
    user.mkdir()
    builtin = load_definition(BUILTIN_DIR / "onboarding.yaml")
    data: dict[str, Any] = yaml.safe_load(
        (BUILTIN_DIR / "onboarding.yaml").read_text(encoding="utf-8")
    )
    data["title"] = "My own onboarding"
    path = write(user, yaml.safe_dump(data), "onboarding.yml")

    catalog = Catalog.load(BUILTIN_DIR, user)

    mine = catalog.get("onboarding")
    assert mine is not None
    assert mine.title == "My own onboarding"
    assert mine.version != builtin.version
    assert catalog.sources["onboarding"] == path
    assert len(catalog) == len(BUILTIN_FILES)
    assert catalog.replaced == {"onboarding": path}  # said at start, not done in silence
    assert catalog.problems == []


def test_two_user_definitions_of_one_name_keep_the_first_and_report_the_second(
    tmp_path: Path,
) -> None:
    """Which of the two would run hung on the files' order; the second is refused."""
    user = tmp_path / "processes"
    user.mkdir()
    first = write(user, GOOD.replace("name: demo", "name: mine"), "a.yaml")
    second = write(
        user, GOOD.replace("name: demo", "name: mine").replace("Demo", "Other"), "b.yaml"
    )
    onboarding = (BUILTIN_DIR / "onboarding.yaml").read_text(encoding="utf-8")
    write(user, onboarding, "c.yaml")
    again = write(user, onboarding, "d.yaml")

    catalog = Catalog.load(BUILTIN_DIR, user)

    assert catalog.sources["mine"] == first
    assert catalog.sources["onboarding"] == user / "c.yaml"
    assert [(p.file, p.field) for p in catalog.problems] == [(second, "name"), (again, "name")]
    assert "a.yaml defines a process named 'mine' already" in str(catalog.problems[0])


def test_catalog_without_a_user_folder(tmp_path: Path) -> None:
    catalog = Catalog.load(BUILTIN_DIR, tmp_path / "missing")
    assert len(catalog) == len(BUILTIN_FILES)
    assert catalog.problems == []


# --- conditions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("amount >= 1000", {"amount": 1000}, True),
        ("amount >= 1000", {"amount": 999}, False),
        ("amount < 10", {"amount": 3}, True),
        ("package == 'premium'", {"package": "premium"}, True),
        ("package != 'premium'", {"package": "premium"}, False),
        ("1 < amount <= 5", {"amount": 5}, True),
        ("1 < amount <= 5", {"amount": 6}, False),
        ("package == 'premium' and amount >= 1000", {"package": "premium", "amount": 5}, False),
        ("package == 'premium' or amount >= 1000", {"package": "basic", "amount": 5000}, True),
        ("not paid", {"paid": False}, True),
        ("not (a == 1 or b == 2)", {"a": 0, "b": 2}, False),
        ("package in ['standard', 'premium']", {"package": "standard"}, True),
        ("package in ('standard', 'premium')", {"package": "basic"}, False),
        ("package not in ['basic']", {"package": "premium"}, True),
        ("'vip' in tags", {"tags": ["new", "vip"]}, True),
        ("payment != None", {"payment": {"paid": True}}, True),
    ],
)
def test_condition_evaluates(source: str, values: dict[str, Any], expected: bool) -> None:
    assert Condition(source).evaluate(values) is expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "open('x')",
        "os.system",
        "payment.amount > 1",
        "tags[0] == 'vip'",
        "lambda: 1",
        "(lambda: True)()",
        "amount + 1 > 2",
        "amount is None",
        "[x for x in tags]",
        "amount >",
    ],
)
def test_condition_refuses_unsafe_or_broken_expressions(source: str) -> None:
    with pytest.raises(ValueError):
        Condition(source)


def test_condition_collects_names() -> None:
    condition = Condition("package == 'premium' and amount in [low, high] or not paid")
    assert condition.names == {"package", "amount", "low", "high", "paid"}


def test_condition_missing_names_are_none() -> None:
    assert Condition("payment == None").evaluate({}) is True
    assert Condition("payment != None").evaluate({}) is False
    assert Condition("not payment").evaluate({}) is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("amount > 5", False),
        ("amount <= 5", False),
        ("5 < amount", False),
        ("'vip' in tags", False),
        ("'vip' not in tags", True),
        ("amount == 5", False),
    ],
)
def test_a_condition_on_an_input_left_out_holds_no_order(source: str, expected: bool) -> None:
    assert Condition(source).evaluate({}) is expected


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("amount > 5", {"amount": "lots"}),
        ("amount > 1000", {"amount": "5000.00"}),  # money as text: a silent False before
        ("amount <= 'x'", {"amount": 3}),
        ("'vip' in tags", {"tags": 7}),
    ],
)
def test_a_condition_on_values_with_no_order_fails_visibly(
    source: str, values: dict[str, Any]
) -> None:
    with pytest.raises(ConditionError, match="cannot compare"):
        Condition(source).evaluate(values)


# --- templating -------------------------------------------------------------------------


def test_render_fills_placeholders() -> None:
    values = {"client": "Acme", "amount": "1200.00", "count": 3}
    rendered = render("Dear {client}, {amount} due ({count} reminders, {client})", values)
    assert rendered == "Dear Acme, 1200.00 due (3 reminders, Acme)"


def test_render_leaves_other_text_alone() -> None:
    text = "Keep {Client}, { client }, {1st}, {} and a lone { brace"
    assert render(text, {"client": "Acme", "Client": "no"}) == text


def test_render_missing_value_is_empty() -> None:
    assert render("Hi {client}!", {}) == "Hi !"
    assert render("Hi {client}!", {"client": None}) == "Hi !"


def test_render_does_not_evaluate_values() -> None:
    assert render("{a}", {"a": "{b}", "b": "nope"}) == "{b}"


def test_placeholders_finds_names() -> None:
    assert placeholders("{a} and {b_2} and {a}, {_x}") == {"a", "b_2", "_x"}
    assert placeholders("no {Caps}, { spaced }, {9lives} or {}") == set()
    assert placeholders("") == set()


def test_doubled_braces_stay_literal() -> None:
    assert "Acme" not in render("{{client}}", {"client": "Acme"})
    assert placeholders("{{client}}") == set()


@pytest.mark.parametrize("template", ["{{{ref}}}", "{ref}}", "{{{ref}"])
def test_placeholders_are_the_names_render_fills(template: str) -> None:
    """``{{{ref}}}`` renders as ``{INV-7}`` but was no placeholder: a definition using an
    unknown name there loaded, and an action's ``with`` of it sent ``{}`` where its card
    showed ``{INV-7}`` (the card keeps only the values the actions' placeholders name)."""
    assert "INV-7" in render(template, {"ref": "INV-7"})
    assert placeholders(template) == {"ref"}


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("72h", timedelta(hours=72)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 2D ", timedelta(days=2)),
        ("1h 15m", timedelta(hours=1, minutes=15)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", "   ", "0h", "0m0s", "soon", "3x", "h", "-5m", "1.5h"),
        *("3651d", "99999999d", "9999999999999d"),  # past ten years; past what dates hold
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_duration_in_capital_m_is_refused_in_a_file_and_read_on_as_stored(
    tmp_path: Path,
) -> None:
    """``expires_in: 1M``, a month as many write it, was a minute: the gate rejected a
    minute after it opened. A definition a run began with keeps its meaning."""
    wrote = GOOD.replace(
        "    summary: Send the note", "    expires_in: 1M\n    summary: Send the note"
    )
    problem = only_problem(write(tmp_path, wrote))
    assert "M is minutes or months?" in problem.message and problem.line is not None
    waits = GOOD.replace(
        "  - id: send\n", "  - id: nap\n    kind: wait\n    for: 2M\n  - id: send\n"
    )
    assert "M is minutes or months?" in only_problem(write(tmp_path, waits)).message
    stored = load_definition(write(tmp_path, wrote.replace("1M", "1m"))).model_dump(by_alias=True)
    stored["steps"][1]["expires_in"] = "1M"  # as a steward from before stored it
    gate = ProcessDefinition.model_validate(stored).steps[1]
    assert isinstance(gate, ApprovalStep) and gate.expiry == timedelta(minutes=1)


def test_describe_duration_round_trips() -> None:
    for text in ("30m", "72h", "3d", "90m", "45s"):
        assert parse_duration(describe_duration(parse_duration(text))) == parse_duration(text)
    assert describe_duration(timedelta(hours=72)) == "3d"


def test_a_catalog_built_from_definitions_knows_their_versions() -> None:
    definition = load_definition(BUILTIN_FILES[0])
    catalog = Catalog(definitions={definition.name: definition})
    assert catalog.versions == {definition.name: definition.version}


async def test_a_definition_acting_through_what_nobody_registered_is_skipped_at_start(
    tmp_path: Path,
) -> None:
    """It loaded, and failed only after its approval; a /retry ran the same version."""
    user = tmp_path / "processes"
    user.mkdir()
    crm = GOOD.replace("connector: outbox", "connector: crm")
    write(user, crm, "crm.yaml")
    wrong = GOOD.replace("name: demo", "name: wrong").replace("send_email", "delete_everything")
    write(user, wrong, "wrong.yaml")
    undo = "    compensate:\n      summary: Take back {email}\n      action: unsend\n    with:\n"
    undoing = GOOD.replace("name: demo", "name: undoing").replace("    with:\n", undo)
    write(user, undoing, "undoing.yaml")
    fine = GOOD.replace("name: demo", "name: fine")
    write(user, fine, "fine.yaml")
    settings = load_settings(home=tmp_path / "home", processes_dir=user)
    async with Steward.open(settings) as steward:
        catalog = steward.catalog
        assert catalog.get("demo") is None and catalog.get("wrong") is None
        assert catalog.get("fine") is not None and catalog.get("onboarding") is not None
        said = {(p.file.name, p.field): p.message for p in catalog.problems}
        lines = {(p.file.name, p.field): p.line for p in catalog.problems}
    assert said[("crm.yaml", "steps.2.connector")].startswith("no connector 'crm' (registered: ")
    assert said[("wrong.yaml", "steps.2.action")].startswith(
        "outbox has no action 'delete_everything' (it has "
    )
    assert said[("undoing.yaml", "steps.2.compensate.action")].startswith(
        "outbox has no action 'unsend' (it has "
    )
    assert lines == {  # as every other problem of a definition: without it, no line was given
        ("crm.yaml", "steps.2.connector"): line_of(crm, "connector: crm"),
        ("wrong.yaml", "steps.2.action"): line_of(wrong, "action: delete_everything"),
        ("undoing.yaml", "steps.2.compensate.action"): line_of(undoing, "action: unsend"),
    }


def test_a_user_definition_refused_for_its_actions_replaces_nothing_and_blocks_no_other(
    tmp_path: Path,
) -> None:
    """The first of two files with one name, refused for an action nobody registered:
    the second was skipped as its duplicate, and the built-in both replace was gone."""
    user = tmp_path / "processes"
    user.mkdir()
    onboarding = (BUILTIN_DIR / "onboarding.yaml").read_text(encoding="utf-8")
    assert "action: send_email" in onboarding
    write(user, onboarding.replace("action: send_email", "action: fax"), "a.yaml")
    good = write(user, onboarding.replace("Client onboarding", "Our onboarding"), "b.yaml")
    known = frozenset({"send_email", "send_invitation", "cancel_invitation", "create_folder"})
    actions = {"outbox": known | {"publish"}, "email": known}
    plain = Catalog.load(BUILTIN_DIR, None, actions)
    catalog = Catalog.load(BUILTIN_DIR, user, actions)
    assert catalog.sources["onboarding"] == good and catalog.replaced["onboarding"] == good
    assert len(catalog) == len(plain)
    refused = {p.message for p in catalog.problems if p.file.name == "a.yaml"}
    assert refused and all("has no action 'fax'" in message for message in refused)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"type": "integer", "default": "abc"}, "default: expected a whole number"),
        ({"type": "choice", "choices": ["a", "b"], "default": "z"}, "default: expected one of"),
        ({"type": "date", "default": "yesterday"}, "default: expected a date as YYYY-MM-DD"),
    ],
)
def test_a_default_not_of_its_input_s_type_is_a_problem(spec: dict[str, Any], said: str) -> None:
    """It reached the card as written ("go abc yesterday z")."""
    with pytest.raises(ValueError, match=said):
        InputSpec.model_validate(spec)
    assert InputSpec.model_validate({"type": "integer", "default": 5}).default == 5
    assert InputSpec.model_validate({"type": "string", "default": "{client} team"}).default


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        ({"type": "choice", "choices": ["basic", "premium"], "default": "Premium"}, "premium"),
        ({"type": "boolean", "default": "no"}, False),
        ({"type": "number", "default": "1e3"}, 1000.0),
        ({"type": "money", "default": 100}, "100.00"),
        ({"type": "email", "default": "Jane@Acme.COM"}, "jane@acme.com"),
        ({"type": "date", "default": date(2026, 12, 1)}, "2026-12-01"),  # YAML's own date
        ({"type": "string", "default": 5}, "5"),
    ],
)
def test_a_default_is_kept_as_its_input_would_be_typed(spec: dict[str, Any], kept: Any) -> None:
    """A default went into the run as written: ``package == 'premium'`` did not hold for
    ``Premium``, ``"no"`` held as true, and a YAML date stopped the start (not JSON)."""
    default = InputSpec.model_validate(spec).default
    assert default == kept and type(default) is type(kept)


@pytest.mark.parametrize(
    "wrong", ["{Email}", "{ email }", "{email.name}", "{email:>20}", "{email[0]}", "{email!r}"]
)
def test_a_placeholder_mistyped_is_a_problem_not_sent_as_written(
    tmp_path: Path, wrong: str
) -> None:
    summary = "summary: Send the note to {email}"
    problem = only_problem(write(tmp_path, GOOD.replace(summary, f"summary: To {wrong}")))
    assert problem.message.startswith(f"step 'approve' has {wrong}, which is no placeholder")
    assert "write {email}, lower case" in problem.message
    braces = load_definition(write(tmp_path, GOOD.replace(summary, 'summary: "{{Email}} {10}"')))
    assert braces.steps[1].summary == "{{Email}} {10}"  # type: ignore[union-attr]


def test_a_placeholder_mistyped_in_a_default_is_a_problem_not_sent_as_written(
    tmp_path: Path,
) -> None:
    """A default "{Client} team" greeted the client as "Hi {Client} team"."""
    default = '  contact: {type: string, required: false, default: "{Client} team"}\n'
    text = GOOD.replace("steps:\n", default + "steps:\n", 1)
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert_at(problem, path, line_of(text, "{Client} team"), "inputs.contact.default")
    assert problem.message.startswith("the default of 'contact' has {Client}, which is no")
    assert "write {client}, lower case" in problem.message
    stored = yaml.safe_load(text)  # a run that began with one goes on as it began
    assert ProcessDefinition.model_validate(stored).inputs["contact"].default == "{Client} team"


def test_a_rejection_that_goes_to_the_action_it_gates_is_a_problem(tmp_path: Path) -> None:
    """The run reached the action, which refused: "reached without approval"."""
    text = GOOD.replace('    text: "{body}"\n', '    text: "{body}"\n    on_reject: send\n')
    problem = only_problem(write(tmp_path, text))
    assert problem.field == "steps.1.on_reject"
    assert "goes on a rejection to 'send', which acts only on its approval" in problem.message
