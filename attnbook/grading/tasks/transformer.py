"""Set 11, the Transformer: a residual block with layer normalisation (pre- and post-norm), cross-attention
(queries from the decoder, keys and values from the encoder, source padding masked), and the decoder's
self-attention at one step of greedy decoding."""

from __future__ import annotations

import math

import torch

from ... import attention as _book
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

NEG_INF = float("-inf")
EPS = 1e-5

#: the book's own Transformer pieces: calling one earns 0 in this set
BOOK_TRANSFORMER = (
    "attnbook.transformer:*",
    "attnbook.multihead:*",
    "attnbook.attention:scaled_dot_product_attention",
    "attnbook.attention:attention_weights",
    "attnbook.attention:softmax",
)

# ------------------------------------------------------------------------------------------ 11.residual_ffn


def _ffn(z, W_1, b_1, W_2, b_2, relu=True):
    hidden = z @ W_1.T + b_1  # (B, T, d_ff)
    return (torch.relu(hidden) if relu else hidden) @ W_2.T + b_2  # (B, T, d)


def _layer_norm(z, gamma, beta, correction=0, eps=EPS, eps_inside=True, dim=-1):
    mu = z.mean(dim, keepdim=True)
    var = ((z - mu) ** 2).sum(dim, keepdim=True) / (z.shape[dim] - correction)  # biased: correction 0
    std = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return gamma * (z - mu) / std + beta


def _residual_ffn_ref(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    if norm_first:
        return x + _ffn(_layer_norm(x, gamma, beta), W_1, b_1, W_2, b_2)  # x + FFN(LN(x))
    return _layer_norm(x + _ffn(x, W_1, b_1, W_2, b_2), gamma, beta)  # LN(x + FFN(x))


def _block(ln=_layer_norm, residual=True, relu=True, swapped=False, normed_residual=False):
    def fn(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
        if swapped:
            norm_first = not norm_first
        ff = lambda z: _ffn(z, W_1, b_1, W_2, b_2, relu)  # noqa: E731
        if norm_first:
            z = ln(x, gamma, beta)
            return (z if normed_residual else x) * residual + ff(z)
        return ln(x * residual + ff(x), gamma, beta)

    return fn


def _residual_ffn_cases():
    g = generator(11)

    def args(B, T, d, d_ff, norm_first, scale=1.0):
        return (
            randn(g, B, T, d, scale=scale),
            randn(g, d_ff, d, scale=0.5),
            randn(g, d_ff),
            randn(g, d, d_ff, scale=0.5),
            randn(g, d),
            1 + randn(g, d, scale=0.3),
            randn(g, d, scale=0.3),
            norm_first,
        )

    def dims(B, T, d, d_ff):
        return {"B": B, "T": T, "d": d, "d_ff": d_ff}

    # a row whose features are all equal, and a feed-forward layer that adds nothing to it: the variance is
    # exactly 0, so only eps keeps the division finite (LayerNorm then gives beta)
    flat = args(2, 3, 5, 7, False)
    x = flat[0].clone()
    x[0, 1] = 2.5
    flat = (x, flat[1], flat[2], torch.zeros(5, 7, dtype=x.dtype), torch.zeros(5, dtype=x.dtype), *flat[5:])
    return [
        Case(
            "post-norm, B=2, T=3, d=5, d_ff=7",
            args(2, 3, 5, 7, False),
            dims=dims(2, 3, 5, 7),
            note="norm_first=False: LayerNorm(x + FFN(x))",
        ),
        Case(
            "pre-norm, B=2, T=3, d=5, d_ff=7",
            args(2, 3, 5, 7, True),
            dims=dims(2, 3, 5, 7),
            note="norm_first=True: x + FFN(LayerNorm(x))",
        ),
        Case(
            "pre-norm, B=3, T=4, d=6, d_ff=3",
            args(3, 4, 6, 3, True, scale=4.0),
            dims=dims(3, 4, 6, 3),
            note="d_ff smaller than d, inputs of size about 4",
        ),
        Case(
            "post-norm, B=1, T=6, d=3, d_ff=8",
            args(1, 6, 3, 8, False, scale=0.1),
            dims=dims(1, 6, 3, 8),
            note="small inputs: the variance is far below 1",
        ),
        Case(
            "post-norm, a row with zero variance",
            flat,
            dims=dims(2, 3, 5, 7),
            note="the features of position 1 of sentence 0 are all equal and the feed-forward layer adds 0",
        ),
        Case(
            "pre-norm, T=0",
            args(2, 0, 4, 6, True),
            dims=dims(2, 0, 4, 6),
            note="sentences of length 0: the output is empty too",
        ),
    ]


def _shortcut_residual_ffn(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    """What a learner who imports the book's Transformer would write (earns 0)."""
    from ... import transformer as book

    ff = book.FeedForward(x.shape[-1], W_1.shape[0]).to(x.dtype)
    with torch.no_grad():
        ff.W_1.weight.copy_(W_1), ff.W_1.bias.copy_(b_1), ff.W_2.weight.copy_(W_2), ff.W_2.bias.copy_(b_2)
    ln = lambda z: torch.nn.functional.layer_norm(z, (z.shape[-1],), gamma, beta, EPS)  # noqa: E731
    return x + ff(ln(x)) if norm_first else ln(x + ff(x))


def _shortcut_cross(S, H, W_q, W_k, W_v, src_len):
    keep = _keep(src_len, H.shape[1])
    return _book.scaled_dot_product_attention(S @ W_q.T, H @ W_k.T, H @ W_v.T, keep)


def _shortcut_step(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], 1)
    out, w = _book.scaled_dot_product_attention((x_t @ W_q.T)[:, None], xs @ W_k.T, xs @ W_v.T)
    return out[:, 0], w[:, 0]


def _ln_var_biased(z, gamma, beta):
    return _layer_norm(z, gamma, beta, correction=1)


register(
    Task(
        id="11.residual_ffn",
        title="the feed-forward sublayer in a pre- or post-norm residual block",
        points=3,
        reference=_residual_ffn_ref,
        cases=_residual_ffn_cases,
        output_names=("output",),
        misconceptions=[
            Misconception(
                "unbiased_variance",
                "your layer normalisation divides the squared deviations by d - 1 (the unbiased variance, "
                "torch.var's default); LayerNorm uses the mean of the squared deviations, a division by d",
                _block(ln=_ln_var_biased),
                hint="z.var(-1, unbiased=False, keepdim=True), or ((z - mean) ** 2).mean(-1, keepdim=True).",
            ),
            Misconception(
                "eps_outside_sqrt",
                "you added eps to the standard deviation; LayerNorm adds it to the variance, inside the square "
                "root",
                _block(ln=lambda z, g, b: _layer_norm(z, g, b, eps_inside=False)),
                hint="(z - mean) / sqrt(var + eps).",
            ),
            Misconception(
                "no_eps",
                "your layer normalisation has no eps, or one far below this task's 1e-5: LayerNorm adds eps = "
                "1e-5 to the variance, which also keeps a position whose features are all equal (variance 0) "
                "from a division by 0, a NaN",
                _block(ln=lambda z, g, b: _layer_norm(z, g, b, eps=0.0)),
            ),
            *(
                Misconception(
                    "wrong_eps",
                    f"your layer normalisation adds eps = {eps:g} to the variance, but this task's eps is 1e-5 (as "
                    "the task text says): eps changes every normalised value a little, and the check is precise "
                    "enough to see it",
                    _block(ln=lambda z, g, b, eps=eps: _layer_norm(z, g, b, eps=eps)),
                )
                for eps in (1e-6, 1e-8, 1e-7, 1e-4, 1e-3)
            ),
            Misconception(
                "norm_over_wrong_axis",
                "you normalised over the time axis (or over everything); LayerNorm normalises each position on "
                "its own, over its d features (the last axis)",
                _block(ln=lambda z, g, b: _layer_norm(z, g, b, dim=1)),
            ),
            Misconception(
                "pre_post_swapped",
                "you built the pre-norm block when norm_first is False and the post-norm block when it is True: "
                "norm_first=True normalises the sublayer's input, norm_first=False the sum after the residual",
                _block(swapped=True),
            ),
            Misconception(
                "no_residual",
                "there is no residual connection: the block's input x must be added to the sublayer's output",
                _block(residual=False),
            ),
            Misconception(
                "residual_of_normed",
                "in the pre-norm block your residual carries the normalised input; it must carry x itself, "
                "unnormalised (only the sublayer reads the normalised copy)",
                _block(normed_residual=True),
            ),
            Misconception(
                "no_affine",
                "you left out the learned scale gamma and shift beta of the layer normalisation",
                _block(ln=lambda z, g, b: _layer_norm(z, torch.ones_like(g), torch.zeros_like(b))),
            ),
            Misconception(
                "no_relu",
                "your feed-forward layer has no ReLU between its two linear layers: without it the two are one "
                "linear map",
                _block(relu=False),
            ),
            Misconception(
                "no_norm",
                "there is no layer normalisation in your block: the residual sum is right, but LayerNorm must "
                "be applied (to the sum in post-norm, to the sublayer's input in pre-norm)",
                _block(ln=lambda z, g, b: z),
            ),
        ],
        hint="post-norm: LN(x + FFN(x)); pre-norm: x + FFN(LN(x)); LN(z) = γ (z − μ) / √(σ² + ε) + β over the "
        "last axis, σ² the biased variance; FFN(z) = relu(z W_1ᵀ + b_1) W_2ᵀ + b_2.",
        forbidden=BOOK_TRANSFORMER,
        shortcut_example=_shortcut_residual_ffn,
        atol=1e-9,
        rtol=1e-9,
    )
)

# ------------------------------------------------------------------------------------------ 11.cross_attention


def _keep(src_len, N):
    return torch.arange(N)[None, None, :] < src_len[:, None, None]  # (B, 1, N): True at real source positions


def _masked_softmax(scores, keep):
    """Softmax over the last axis, masked entries exactly 0, a row with no key left all zeros."""
    scores = scores.masked_fill(~keep, NEG_INF)
    top = scores.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _cross_ref(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T  # (B, T, d_k), (B, N, d_k), (B, N, d_v)
    weights = _masked_softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), _keep(src_len, H.shape[1]))
    return weights @ V, weights  # (B, T, d_v), (B, T, N)


def _cross(scale=None, keep_fn=None, fill=NEG_INF, after=False, zero_fill=False, dim=-1, empty_nan=False):
    def fn(S, H, W_q, W_k, W_v, src_len):
        Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
        s = scale(Q, S) if scale else math.sqrt(Q.shape[-1])
        scores = Q @ K.transpose(-1, -2) / s
        keep = _keep(src_len, H.shape[1]) if keep_fn is None else keep_fn(S, H, src_len)
        if after:
            w = torch.softmax(scores, -1) * keep
        elif zero_fill:
            w = torch.softmax(scores * keep, -1)
        elif dim != -1 or empty_nan or fill != NEG_INF:
            w = torch.softmax(scores.masked_fill(~keep, fill), dim)
        else:
            w = _masked_softmax(scores, keep)
        return w @ V, w

    return fn


def _no_keep(S, H, src_len):
    return torch.ones(1, 1, H.shape[1], dtype=torch.bool)


def _first_length_keep(S, H, src_len):
    """The first sentence's length for every sentence; where that length is N (no padding in the first
    sentence) this is no mask at all, which the misconception "no_mask" names: not claimed here."""
    if int(src_len[0]) >= H.shape[1]:
        raise ValueError()  # the first length is N: no mask at all, named by "no_mask"
    return _keep(src_len[:1].expand(src_len.shape[0]), H.shape[1])


def _causal_keep(S, H, src_len):
    T, N = S.shape[1], H.shape[1]
    return _keep(src_len, N) & torch.ones(T, N, dtype=torch.bool).tril()


def _query_keep(S, H, src_len):
    return torch.arange(S.shape[1])[None, :, None] < src_len[:, None, None]  # (B, T, 1)


def _cross_cases():
    g = generator(111)

    def args(B, T, N, d_model, d_enc, d_k, d_v, lengths, pad_scale=1.0):
        H = randn(g, B, N, d_enc)
        keep = _keep(torch.tensor(lengths), N)[:, 0, :, None]  # (B, N, 1)
        H = torch.where(keep, H, H * pad_scale)  # padded positions may hold large values
        return (
            randn(g, B, T, d_model),
            H,
            randn(g, d_k, d_model),
            randn(g, d_k, d_enc),
            randn(g, d_v, d_enc),
            torch.tensor(lengths),
        )

    def dims(B, T, N, d_model, d_enc, d_k, d_v):
        return {"B": B, "T": T, "N": N, "d_model": d_model, "d_enc": d_enc, "d_k": d_k, "d_v": d_v}

    return [
        Case(
            "B=2, T=3, N=5, d_model=4, d_enc=6, d_k=3, d_v=7",
            args(2, 3, 5, 4, 6, 3, 7, [2, 5]),
            dims=dims(2, 3, 5, 4, 6, 3, 7),
            note="every size different; lengths 2 and 5",
        ),
        Case(
            "T=6 decoder steps, N=4 source positions",
            args(3, 6, 4, 5, 3, 2, 6, [4, 3, 4]),
            dims=dims(3, 6, 4, 5, 3, 2, 6),
            note="more target steps than source positions",
        ),
        Case(
            "a sentence of length 0 and one of length 1",
            args(3, 2, 5, 3, 4, 6, 2, [0, 1, 5]),
            dims=dims(3, 2, 5, 3, 4, 6, 2),
            note="sentence 0 has no source word: its weights and its output are all 0",
        ),
        Case(
            "large values at the padding",
            args(2, 4, 6, 3, 5, 4, 3, [3, 6], pad_scale=1e3),
            dims=dims(2, 4, 6, 3, 5, 4, 3),
            note="the padded encoder states are about 1000 times larger",
        ),
        Case(
            "one decoder step, B=1",
            args(1, 1, 7, 6, 2, 5, 4, [6]),
            dims=dims(1, 1, 7, 6, 2, 5, 4),
            note="T=1: a single query",
        ),
        Case(
            "T=0 decoder steps",
            args(2, 0, 3, 4, 5, 2, 3, [3, 1]),
            dims=dims(2, 0, 3, 4, 5, 2, 3),
            note="no target step yet: empty output and weights",
        ),
    ]


def _cross_masked_zero(case, outputs):
    weights = outputs[1]
    S, H, src_len = case.args[0], case.args[1], case.args[5]
    shape = (S.shape[0], S.shape[1], H.shape[1])
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != shape:
        return None
    hidden = ~_keep(src_len, H.shape[1]).expand(shape)
    if (weights.detach()[hidden].abs() > 1e-12).any():
        return (
            "a padded source position got a weight that is not 0: the padding of each sentence must be "
            "masked out before the softmax"
        )
    return None


_cross_masked_zero.key = "masked_weight_not_zero"


register(
    Task(
        id="11.cross_attention",
        title="cross-attention with a source padding mask",
        points=3,
        reference=_cross_ref,
        cases=_cross_cases,
        output_names=("output", "weights"),
        misconceptions=[
            Misconception(
                "not_scaled",
                "you did not scale the scores: divide them by √d_k, the width of the projected queries and keys",
                _cross(scale=lambda Q, S: 1.0),
            ),
            Misconception(
                "scaled_by_d_model",
                "you scaled by √d_model, the width of the decoder states; the scale is √d_k, the width of the "
                "projected queries and keys",
                _cross(scale=lambda Q, S: math.sqrt(S.shape[-1])),
            ),
            Misconception(
                "scaled_by_d_v",
                "you scaled by √d_v, the width of the values; the scale is √d_k, the width of the projected "
                "queries and keys that the dot product sums over",
                lambda S, H, W_q, W_k, W_v, src_len: _cross(scale=lambda Q, S_: math.sqrt(W_v.shape[0]))(
                    S, H, W_q, W_k, W_v, src_len
                ),
            ),
            Misconception(
                "causal_in_cross",
                "you applied a causal (look-ahead) mask in the cross-attention: every decoder step may look at "
                "every real source position; only the decoder's self-attention is causal",
                _cross(keep_fn=_causal_keep),
            ),
            Misconception(
                "mask_filled_with_zero",
                "you set the padded scores to 0: exp(0) = 1, so padding still gets weight. A masked score must "
                "become -inf before the softmax",
                _cross(zero_fill=True),
            ),
            Misconception(
                "mask_after_softmax",
                "you applied the mask after the softmax: padding gets 0 but the other weights no longer sum to 1",
                _cross(after=True),
            ),
            Misconception(
                "mask_on_queries",
                "your mask removes decoder steps (queries) instead of source positions (keys): src_len counts "
                "the source positions, the last axis of the scores",
                _cross(keep_fn=_query_keep, after=True),
            ),
            Misconception(
                "nan_for_empty_source",
                "for the sentence of length 0 every score is -inf and your softmax gives NaN; the task asks for "
                "all-zero weights and a zero output there",
                _cross(empty_nan=True),
            ),
            Misconception(
                "empty_source_uniform",
                "for the sentence of length 0 your weights are spread over the padding (a large negative fill "
                "leaves every key equal); the task asks for all-zero weights and a zero output there",
                _cross(fill=-1e9),
            ),
            Misconception(
                "no_mask",
                "your weights do not mask the padding at all: every source position got weight, the padded "
                "ones (position ≥ src_len[b]) too. Each sentence's padded positions must get weight exactly 0",
                _cross(keep_fn=_no_keep),
            ),
            Misconception(
                "one_length_for_all",
                "you masked every sentence with the length of the first one: each sentence of the batch has "
                "its own length, src_len[b]",
                _cross(keep_fn=_first_length_keep),
            ),
            Misconception(
                "swapped_outputs",
                "your function returns (weights, output); the book's order, PyTorch's too, is (output, weights)",
                lambda *args: _cross_ref(*args)[::-1],
            ),
            *(
                Misconception(
                    "softmax_over_queries",
                    "your softmax runs over the decoder steps (axis 1): each step's weights must sum to 1 over the "
                    "keys, the source positions (the last axis)",
                    _cross(fill=fill, dim=1),
                )
                for fill in (NEG_INF, -1e9)
            ),
        ],
        properties=[_cross_masked_zero],
        hint="Q = S W_qᵀ, K = H W_kᵀ, V = H W_vᵀ; scores Q Kᵀ / √d_k; -inf where position ≥ src_len; softmax "
        "over the last axis; a row with no key left is all zeros; output = weights @ V.",
        forbidden=BOOK_TRANSFORMER,
        shortcut_example=_shortcut_cross,
        atol=1e-9,
        rtol=1e-9,
    )
)

# ------------------------------------------------------------------------------------------ 11.self_attention_step


def _step_ref(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None, :]], dim=1)  # (B, t + 1, d_model): positions 0..t, the new one last
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T  # (B, d_k), (B, t + 1, d_k), (B, t + 1, d_v)
    weights = torch.softmax((K @ q[:, :, None])[..., 0] / math.sqrt(q.shape[-1]), dim=-1)  # (B, t + 1)
    return (weights[:, None, :] @ V)[:, 0], weights  # (B, d_v), (B, t + 1)


def _step(order="last", scale=None, query="new", dim=-1, causal_one_row=False):
    def fn(x_t, past, W_q, W_k, W_v):
        if order == "none":
            xs = past
        elif order == "first":
            xs = torch.cat([x_t[:, None], past], 1)
        else:
            xs = torch.cat([past, x_t[:, None]], 1)
        K, V = xs @ W_k.T, xs @ W_v.T
        q = x_t @ W_q.T if query == "new" else (xs @ W_q.T).mean(1)
        s = math.sqrt(q.shape[-1]) if scale is None else scale(q, V)
        scores = (K @ q[:, :, None])[..., 0] / s
        if causal_one_row:
            scores = scores.masked_fill(torch.arange(xs.shape[1])[None, :] > 0, NEG_INF)
        w = torch.softmax(scores, dim)
        return (w[:, None, :] @ V)[:, 0], w

    return fn


def _step_d_model(x_t, past, W_q, W_k, W_v):
    """Scores divided by √d_model (the width of x_t) instead of √d_k."""
    return _step(scale=lambda q, V: math.sqrt(x_t.shape[-1]))(x_t, past, W_q, W_k, W_v)


def _step_cases():
    g = generator(1111)

    def args(B, t, d_model, d_k, d_v, scale=1.0):
        return (
            randn(g, B, d_model, scale=scale),
            randn(g, B, t, d_model, scale=scale),
            randn(g, d_k, d_model),
            randn(g, d_k, d_model),
            randn(g, d_v, d_model),
        )

    def dims(B, t, d_model, d_k, d_v):
        return {"B": B, "t": t, "t+1": t + 1, "d_model": d_model, "d_k": d_k, "d_v": d_v}

    return [
        Case(
            "step t=3, B=2, d_model=5, d_k=4, d_v=6",
            args(2, 3, 5, 4, 6),
            dims=dims(2, 3, 5, 4, 6),
            note="three earlier steps and the new one",
        ),
        Case(
            "the first step, t=0",
            args(3, 0, 4, 2, 5),
            dims=dims(3, 0, 4, 2, 5),
            note="no earlier step: the new position can only attend to itself",
        ),
        Case(
            "step t=6, B=1, d_model=3, d_k=5, d_v=2",
            args(1, 6, 3, 5, 2),
            dims=dims(1, 6, 3, 5, 2),
            note="d_k larger than d_model",
        ),
        Case(
            "step t=2, large inputs",
            args(4, 2, 6, 3, 3, scale=20.0),
            dims=dims(4, 2, 6, 3, 3),
            note="scores of several hundred: the softmax is nearly one-hot",
        ),
    ]


register(
    Task(
        id="11.self_attention_step",
        title="the decoder's self-attention at one step of greedy decoding",
        points=3,
        reference=_step_ref,
        cases=_step_cases,
        output_names=("output", "weights"),
        misconceptions=[
            Misconception(
                "excludes_itself",
                "the new position attends only to the earlier steps; it must attend to itself as well (at the "
                "first step it has nothing else)",
                _step(order="none"),
            ),
            Misconception(
                "new_step_first",
                "your weights are in the wrong order: the earlier steps 0..t-1 come first and the new step t "
                "last, the order of the positions",
                _step(order="first"),
            ),
            Misconception(
                "not_scaled",
                "you did not scale the scores: divide them by √d_k",
                _step(scale=lambda q, V: 1.0),
            ),
            Misconception(
                "scaled_by_d_v",
                "you scaled by √d_v, the width of the values; the scale is √d_k, the width of the queries and "
                "keys",
                _step(scale=lambda q, V: math.sqrt(V.shape[-1])),
            ),
            Misconception(
                "scaled_by_d_model",
                "you scaled by √d_model, the width of the decoder's inputs x_t; the scale is √d_k, the width of "
                "the projected queries and keys",
                _step_d_model,
            ),
            Misconception(
                "causal_mask_one_row",
                "you applied a causal mask made for a one-row query, so the new step sees only step 0. At step "
                "t the new position may see every step 0..t: the causal mask is already satisfied by using "
                "only the past",
                _step(causal_one_row=True),
            ),
            Misconception(
                "query_from_prefix",
                "your query mixes every step of the prefix; the query is the new position's alone (x_t through "
                "W_q)",
                _step(query="mean"),
            ),
            Misconception(
                "softmax_over_batch",
                "your softmax runs over the batch (axis 0); each sentence's weights must sum to 1 over its "
                "own positions 0..t",
                _step(dim=0),
            ),
            Misconception(
                "weights_not_scaled",
                "your output is right but the weights you return are not the ones you used: they are computed "
                "without the scale √d_k",
                lambda x_t, past, W_q, W_k, W_v: (
                    _step_ref(x_t, past, W_q, W_k, W_v)[0],
                    _step(scale=lambda q, V: 1.0)(x_t, past, W_q, W_k, W_v)[1],
                ),
            ),
        ],
        hint="xs = the earlier inputs followed by x_t; q = x_t W_qᵀ, K = xs W_kᵀ, V = xs W_vᵀ; weights = "
        "softmax(K q / √d_k) over the t + 1 positions; output = weights @ V.",
        forbidden=BOOK_TRANSFORMER,
        shortcut_example=_shortcut_step,
        atol=1e-9,
        rtol=1e-9,
    )
)
