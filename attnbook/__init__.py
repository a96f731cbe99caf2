"""attnbook: the helper package of the course book "Attention, step by step".

Modules:
    attention  -- scores, softmax, weights, attention value, masks, scaled dot-product attention
    data       -- our own English->French corpus with true word alignments
    models     -- small GRU seq2seq models: plain, with Luong attention, with Bahdanau attention
    bottleneck -- the plain model with a context of k numbers (chapter 2)
    analysis   -- the GRU step written out, agreement of attention with true alignments (chapter 7)
    multihead  -- self-attention, multi-head attention, sinusoidal positions (chapter 9)
    blockwise  -- the online softmax and attention block by block (chapter 10)
    transformer -- the encoder-decoder Transformer built from multihead (chapter 11)
    plots      -- book style, palette, heat maps
    progress   -- progress bars for training loops
    grading    -- checkers behind the exercises, and the trusted grader for instructors
"""

__version__ = "0.1.0"

from .i18n import get_language, set_language  # noqa: E402  (the language of the grader's messages and figures)

__all__ = ["__version__", "get_language", "set_language"]
