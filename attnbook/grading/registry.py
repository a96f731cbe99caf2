"""Where tasks are registered and found by id (``"04.dot_scores"``)."""

from __future__ import annotations

import importlib

from .engine import Task

_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry; ids are unique."""
    if task.id in _TASKS and _TASKS[task.id] is not task:
        raise ValueError(f"task id {task.id!r} is registered twice")
    _TASKS[task.id] = task
    return task


def _load_all() -> None:
    importlib.import_module("attnbook.grading.tasks")


def get_task(task_id: str) -> Task:
    """The task with this id; a ``KeyError`` with the known ids if there is none."""
    _load_all()
    if task_id not in _TASKS:
        known = ", ".join(sorted(_TASKS))
        raise KeyError(f"no graded task is called {task_id!r}; known tasks: {known}")
    return _TASKS[task_id]


def all_tasks() -> dict[str, Task]:
    """Every registered task, by id."""
    _load_all()
    return dict(_TASKS)
