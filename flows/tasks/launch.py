"""A task run's RunLaunched (pure): the task graph pinned as the run's steps, the repository pinned as inputs.

``baton tasks run`` and ``POST /api/projects/{id}/task-runs`` both come here,
so what a task run pins is decided once: the steps (one ``task`` step per
task, in wave order), the repository root and allow-list of the project as
registered (never a path the request chose), the base commit the
integration branch starts from, the target branch to land on, and the
review rounds before a person is asked; with a target, the landing gate
after the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.events import RunLaunched
from flows.kinds import StepKind
from flows.model import FlowSnapshot, StepSpec
from flows.tasks.files import TaskGraph, task_steps
from flows.tasks.run import MAX_ROUNDS_INPUT, landing_gate
from flows.text import check_text

TASK_FLOW = "tasks"
"""The flow name a task run is recorded under (it has no flow in the registry: its graph is its task files)."""


def task_run_launched(graph: TaskGraph, *, run_id: str, now: float, project_id: str, repo: str,
                      allow: Sequence[Sequence[str]], base: str, target: str, max_rounds: int, model: str = "",
                      backend: str = "openai", launched_by: str = "", retries: int = 1,
                      title: str = "", land_timeout_s: float = 0.0) -> RunLaunched:
    """The RunLaunched of a task run over ``graph`` (already checked: ``load_task_graph``).

    With a ``target``, the tasks are followed by the landing gate (``flows.tasks.run.LAND_STEP``, an
    approval); ``land_timeout_s`` rejects it by its timer when nobody decides in time (0: it waits).
    """
    for name, text in (("project_id", project_id), ("target", target), ("model", model),
                       ("launched_by", launched_by), ("title", title)):
        check_text(name, text)
    steps = tuple(StepSpec(id=s.id, kind=StepKind.TASK, label=s.label, persona=s.persona, prompt=s.prompt,
                           deps=tuple(s.deps), retries=s.retries, checks=tuple(tuple(c) for c in s.checks),
                           source=s.source)
                  for s in task_steps(graph, retries=retries))
    if target:  # the run ends with an approval to land (DESIGN §12); without a target there is nothing to land
        steps += (landing_gate(steps, target, timeout_s=land_timeout_s, on_timeout="reject" if land_timeout_s
                               else ""),)
    snapshot = FlowSnapshot(name=TASK_FLOW, category="Authoring", description=title or "a task graph",
                            band="medium", steps=steps)
    inputs = {"question": title or f"task graph of {project_id or repo}", "repo": repo,
              "allow": [list(a) for a in allow], "base": base, "target": target, MAX_ROUNDS_INPUT: max_rounds}
    return RunLaunched(run_id=run_id, flow=TASK_FLOW, snapshot=snapshot, band="medium", model=model,
                       backend=backend, input=inputs, project_id=project_id, launched_by=launched_by, at=now)


__all__ = ["TASK_FLOW", "task_run_launched"]
