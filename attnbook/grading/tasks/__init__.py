"""Every exercise set registers its tasks on import; add new modules to this list."""

from . import attention_scores  # noqa: F401  (set 04)
