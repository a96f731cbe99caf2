"""Every exercise set registers its tasks on import; add new modules to this list."""

from . import seq2seq  # noqa: F401  (set 02)
from . import attention_scores  # noqa: F401  (set 04)
from . import softmax_weights  # noqa: F401  (set 05)
from . import attention_value  # noqa: F401  (set 06)
from . import seq2seq_attention  # noqa: F401  (set 07)
from . import matrix_attention  # noqa: F401  (set 08)
from . import multihead  # noqa: F401  (set 09)
from . import online_softmax  # noqa: F401  (set 10)
from . import transformer  # noqa: F401  (set 11)
