"""Task files -> a checked task graph: every problem one line naming the file; waves; the run's steps."""

from __future__ import annotations

import msgspec
import pytest

from flows.model import FlowSnapshot, StepSpec
from flows.tasks.allow import BadArgv, allowed, as_argv
from flows.tasks.files import TaskGraphError, load_task_graph, parse_task_file, task_steps, waves


def task(task_id: str, deps: str = "[]", agent: str = "implementation-specialist", extra: str = "",
         body: str = "Do the thing.") -> str:
    return f"---\nid: {task_id}\ntitle: Task {task_id}\ndepends_on: {deps}\nagent: {agent}\n{extra}---\n{body}\n"


def problems(files: dict[str, str], **kw: object) -> list[str]:
    with pytest.raises(TaskGraphError) as err:
        load_task_graph(files.items(), **kw)  # type: ignore[arg-type]
    lines = str(err.value).splitlines()
    assert lines == [str(p) for p in err.value.problems]
    return lines


DIAMOND = {
    "tasks/a.md": task("a"),
    "tasks/b.md": task("b", "[a]"),
    "tasks/c.md": task("c", "[a]", agent="poc-specialist"),
    "tasks/d.md": task("d", "[b, c]", extra='checks: ["pytest -q tests/d", [make, lint]]\n'),
}


def test_a_diamond_parses_into_three_waves_with_its_checks_as_argv():
    graph = load_task_graph(DIAMOND.items())
    assert waves(graph) == [["a"], ["b", "c"], ["d"]]
    d = graph.task("d")
    assert d.checks == (("pytest", "-q", "tests/d"), ("make", "lint"))
    assert d.depends_on == ("b", "c") and d.title == "Task d" and d.body == "Do the thing."
    assert d.source == "tasks/d.md" and graph.task("c").agent == "poc-specialist"


def test_every_problem_is_one_line_naming_its_file_and_all_are_reported_at_once():
    files = {
        "tasks/a.md": task("a", "[b]"),
        "tasks/b.md": task("b", "[a]"),
        "tasks/c.md": task("c", "[ghost]"),
        "tasks/d.md": task("a"),
        "tasks/e.md": "---\ntitle: no id\nagent: implementation-specialist\n---\nbody\n",
        "tasks/f.md": task("f", agent="investigator"),
        "tasks/g.md": task("g", extra="depends-on: [a]\n"),
        "tasks/h.md": "just text, no frontmatter\n",
        "tasks/i.md": task("i", body=""),
        "tasks/j.md": task("J_upper"),
        "tasks/k.md": task("k", "[k]"),
        "tasks/l.md": task("integrate"),
        "tasks/m.md": task("m", extra="checks: ['pytest \"unclosed']\n"),
        "tasks/n.md": task("land"),  # the landing gate's step id
    }
    lines = problems(files)
    assert "tasks/c.md: depends on unknown task 'ghost'" in lines
    assert "tasks/d.md: duplicate id 'a' (also in tasks/a.md)" in lines
    assert "tasks/e.md: missing field 'id'" in lines
    assert any(line.startswith("tasks/f.md: unknown agent 'investigator'; task agents are "
                               "implementation-specialist, poc-specialist") for line in lines)
    assert any(line.startswith("tasks/g.md: unknown field 'depends-on'") for line in lines)
    assert any(line.startswith("tasks/h.md: no frontmatter") for line in lines)
    assert "tasks/i.md: the task has no text: write what to do below the frontmatter" in lines
    assert any(line.startswith("tasks/j.md: id 'J_upper' is not a task id") for line in lines)
    assert "tasks/k.md: task 'k' depends on itself" in lines
    assert "tasks/l.md: id 'integrate' is reserved" in lines
    assert "tasks/n.md: id 'land' is reserved" in lines
    assert any(line.startswith("tasks/m.md: check 1") and "cannot be split" in line for line in lines)
    assert any(line.startswith("tasks/a.md: dependency cycle: a -> b -> a") for line in lines)
    assert all(line.startswith("tasks/") for line in lines)


def test_a_longer_cycle_is_named_by_its_path_once():
    lines = problems({"t/x.md": task("x", "[z]"), "t/y.md": task("y", "[x]"), "t/z.md": task("z", "[y]")})
    assert lines == ["t/x.md: dependency cycle: x -> z -> y -> x"]


def test_checks_off_the_allow_list_are_refused_at_plan_time():
    lines = problems({"t/d.md": DIAMOND["tasks/d.md"].replace("[b, c]", "[]")}, allow=[["pytest"]])
    assert lines == ["t/d.md: check ['make', 'lint'] is not on the project's allow-list ('pytest')"]
    load_task_graph({"t/d.md": DIAMOND["tasks/d.md"].replace("[b, c]", "[]")}.items(),
                    allow=[["pytest"], ["make", "lint"]])


def test_an_empty_folder_says_so():
    assert problems({}) == ["(task folder): no task files: add NAME.md files with frontmatter"]


def test_bad_frontmatter_yaml_is_one_line_with_where():
    [line] = problems({"t/a.md": "---\nid: a\ntitle: [unclosed\n---\nbody\n"})
    assert line.startswith("t/a.md: frontmatter YAML") and "does not parse" in line


def test_agents_can_be_widened_for_a_persons_own_personas():
    graph = load_task_graph({"t/a.md": task("a", agent="my-coder")}.items(), agents={"my-coder"})
    assert graph.task("a").agent == "my-coder"


def test_a_single_dep_may_be_written_without_brackets():
    parsed = parse_task_file("t/b.md", task("b", "a"))
    assert not isinstance(parsed, list) and parsed.depends_on == ("a",)


def test_task_steps_are_stepspec_compatible_and_in_wave_order():
    steps = task_steps(load_task_graph(DIAMOND.items()), retries=2)
    assert [s.id for s in steps] == ["a", "b", "c", "d"]
    d = steps[-1]
    assert (d.kind, d.persona, d.label, d.deps, d.retries) == ("task", "implementation-specialist", "Task d",
                                                               ("b", "c"), 2)
    # A pinned task graph decodes as today's FlowSnapshot: the integration only adds fields.
    pinned = msgspec.json.encode({"name": "tasks", "steps": [msgspec.to_builtins(s) for s in steps]})
    snapshot = msgspec.json.decode(pinned, type=FlowSnapshot)
    assert snapshot.step("d") == d.step_spec()
    assert isinstance(d.step_spec(), StepSpec) and d.step_spec().prompt == "Do the thing."


@pytest.mark.parametrize(("argv", "allow", "ok"), [
    (["pytest"], [["pytest"]], True),
    (["pytest", "-q", "tests"], [["pytest"]], True),
    (["pytest-evil"], [["pytest"]], False),
    (["./pytest"], [["pytest"]], False),
    (["python", "-m", "pytest"], [["pytest"]], False),
    (["make", "test", "V=1"], [["make", "test"]], True),
    (["make"], [["make", "test"]], False),
    (["make", "install"], [["make", "test"]], False),
    (["make", "testdata-wipe"], [["make", "test"]], False),
    (["rm", "-rf", "/"], [], False),
    ([], [["pytest"]], False),
])
def test_allow_entries_are_word_prefixes(argv, allow, ok):
    assert allowed(argv, allow) is ok


def test_as_argv_splits_like_a_shell_without_one():
    assert as_argv("pytest -q 'tests/a b' ; rm -rf /") == ("pytest", "-q", "tests/a b", ";", "rm", "-rf", "/")
    assert as_argv(["make", "test"]) == ("make", "test")
    for bad in ("", [], [1], ["a\0b"], 'x "open', 3, [""]):
        with pytest.raises(BadArgv):
            as_argv(bad)


def test_the_task_agents_ship_as_personas():
    from flows.personas import PERSONAS
    from flows.tasks.files import TASK_AGENTS

    assert TASK_AGENTS <= PERSONAS
