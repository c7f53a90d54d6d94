"""Task graphs (DESIGN §12), the pure half: task files, the lifecycle, reconciliation.

- :mod:`~flows.tasks.files`: task files -> a checked :class:`TaskGraph`,
  waves, and the run's ``task`` steps;
- :mod:`~flows.tasks.allow`: the project's allow-list rule (argv prefixes);
- :mod:`~flows.tasks.events`: the proposed task events and their enums;
- :mod:`~flows.tasks.lifecycle`: the fold, the transition guard, the plan
  view (status + reason) and the scheduling decision;
- :mod:`~flows.tasks.reconcile`: what to do when git and the log disagree.
"""

from flows.tasks.files import (
    TASK_AGENTS,
    TaskGraph,
    TaskGraphError,
    TaskProblem,
    TaskSpec,
    TaskStepSpec,
    load_task_graph,
    task_steps,
    waves,
)

__all__ = ["TASK_AGENTS", "TaskGraph", "TaskGraphError", "TaskProblem", "TaskSpec", "TaskStepSpec",
           "load_task_graph", "task_steps", "waves"]
