"""Graders for the exercises: ``from attnbook.grading import check``.

``engine`` runs a learner's function against a :class:`Task`; ``tasks/`` registers the tasks of every
exercise set; ``notebook`` holds :func:`check`, :func:`hint` and :func:`progress`; ``cli`` grades whole
notebooks (``attnbook-grade``).
"""

from .engine import (
    Case,
    ForbiddenCallGuard,
    ForbiddenUse,
    LearnerError,
    LearnerTimeout,
    Misconception,
    Result,
    Task,
    forbidden_names,
    run_task,
    translate_error,
)
from .notebook import CheckFailed, GradingFeedback, NotAttemptedYet, check, hint, progress
from .registry import all_tasks, get_task, register

__all__ = [
    "Case",
    "ForbiddenCallGuard",
    "ForbiddenUse",
    "LearnerError",
    "LearnerTimeout",
    "Misconception",
    "Result",
    "Task",
    "forbidden_names",
    "run_task",
    "translate_error",
    "CheckFailed",
    "GradingFeedback",
    "NotAttemptedYet",
    "check",
    "hint",
    "progress",
    "all_tasks",
    "get_task",
    "register",
]
