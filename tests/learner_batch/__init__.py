"""An independent batch of learner-style answers (wrong and valid) for the graded exercise sets.

Written by a red-team learner from the task texts alone, without reading the graders or their
misconception lists. Each module ``set_NN.py`` holds ``WRONG`` (each with the learner's ``mistake`` in
words and the ``cls`` of input that exposes it) and ``VALID`` (other right answers that must pass).
``tests/test_learner_batch.py`` runs them all through ``attnbook.grading.run_task``.
"""

SETS = ["02", "04", "05", "06", "07", "08", "09", "10"]

# Hold-out batches (task ids spelled out in each entry), run with the sets above.
EXTRA = ["holdout_1", "holdout_2", "holdout_3"]
