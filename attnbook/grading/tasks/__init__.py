"""Every exercise set registers its tasks on import; add new modules to this list."""

from . import (
    attention_scores,  # noqa: F401  (set 04)
    attention_value,  # noqa: F401  (set 06)
    matrix_attention,  # noqa: F401  (set 08)
    multihead,  # noqa: F401  (set 09)
    online_softmax,  # noqa: F401  (set 10)
    seq2seq,  # noqa: F401  (set 02)
    seq2seq_attention,  # noqa: F401  (set 07)
    softmax_weights,  # noqa: F401  (set 05)
    transformer,  # noqa: F401  (set 11)
)
