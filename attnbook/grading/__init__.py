"""Graders for the exercises: ``from attnbook.grading import check``.

``engine`` runs a learner's function against a :class:`Task`; ``tasks/`` registers the tasks of every
exercise set; ``notebook`` holds :func:`check`; ``cli`` grades whole notebooks (``attnbook-grade``).
"""

from .engine import Case, Misconception, Result, Task, run_task
from .notebook import CheckFailed, GradingFeedback, NotAttemptedYet, check
from .registry import all_tasks, get_task, register

__all__ = [
    "Case", "Misconception", "Result", "Task", "run_task",
    "CheckFailed", "GradingFeedback", "NotAttemptedYet", "check",
    "all_tasks", "get_task", "register",
]
