"""attnbook: the helper package of the course book "Attention, step by step".

Modules:
    attention  -- scores, softmax, weights, attention value, masks, scaled dot-product attention
    data       -- our own English->French corpus with true word alignments
    models     -- small GRU seq2seq models, plain and with attention
    plots      -- book style, palette, heat maps
    progress   -- progress bars for training loops
    grading    -- checkers behind the exercises
"""

__version__ = "0.1.0"
