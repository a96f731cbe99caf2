"""Measuring what a trained attention model does, for chapter 7 (seq2seq with attention).

Shapes (book notation): B sentences, N source positions (``<eos>`` included), T target steps, d hidden
size, e embedding size, V target vocabulary.

* :func:`gru_cell` is one step of a GRU, written out; it equals ``torch.nn.GRUCell`` with the same
  weights, so a decoder step can be spelled out without a module.
* :func:`aligned_mass` and :func:`alignment_error_rate` compare attention weights ``α`` (B, T, N) with the
  corpus's true alignments (정렬) ``align`` (B, T, N): the share of each step's weight that lands on the
  source words the target word translates, and the error rate of the hard links "step t → its most
  attended source position". :func:`attention_agreement` computes both for a model over a list of pairs.
* :func:`shift_alignment` moves every alignment link a few positions to the right: a *wrong* alignment
  that looks just as tidy as the true one.
* :func:`train_guided` trains like :func:`attnbook.models.train`, optionally with an extra loss term that
  pulls the attention towards a given target distribution (chapter 7 uses it to build a model whose
  attention points at the wrong words while it translates as well as an unguided one).
* :func:`teacher_forced_predictions` predicts the next words under teacher forcing, optionally with the
  attention weights replaced by given ones (an intervention); :func:`teacher_forced_accuracy` scores those
  predictions, optionally with uniform weights (does the output depend on where the model attends?).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnbook.attention import attention_value, softmax
from attnbook.data import PAD, Batch, Pair, iterate_batches, make_batch
from attnbook.models import AttnSeq2Seq, source_mask

__all__ = [
    "gru_cell",
    "real_steps_mask",
    "aligned_mass",
    "alignment_error_rate",
    "shift_alignment",
    "teacher_forced_attention",
    "attention_agreement",
    "train_guided",
    "teacher_forced_predictions",
    "teacher_forced_accuracy",
]


def gru_cell(x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step, the same computation as ``torch.nn.GRUCell``.

    Args:
        x: ``(B, e)`` input (the embedded previous word y_{t-1}).
        h: ``(B, d)`` previous state s_{t-1}.
        W_ih: ``(3d, e)``, W_hh: ``(3d, d)``, b_ih, b_hh: ``(3d,)``; the three blocks of rows are the reset
            gate r, the update gate z and the candidate n, in that order (PyTorch's layout).

    Returns:
        ``(B, d)``: the new state ``s_t = (1 - z) * n + z * h`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
    """
    gx = x @ W_ih.T + b_ih  # (B, 3d)
    gh = h @ W_hh.T + b_hh  # (B, 3d)
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)  # (B, d) reset gate
    z = torch.sigmoid(x_z + h_z)  # (B, d) update gate
    n = torch.tanh(x_n + r * h_n)  # (B, d) candidate state
    return (1 - z) * n + z * h


def real_steps_mask(steps: Tensor, T: int) -> Tensor:
    """``(B,)`` numbers of real target steps -> ``(B, T)`` bool, True at steps ``t < steps[b]``."""
    return torch.arange(T, device=steps.device)[None, :] < steps[:, None]


def aligned_mass(alpha: Tensor, align: Tensor, steps: Tensor) -> Tensor:
    """Mean attention weight on the truly aligned source words, over the real target steps.

    Args:
        alpha: ``(B, T, N)`` attention weights, one distribution over source positions per step.
        align: ``(B, T, N)`` 0/1, ``align[b, t, i] = 1`` if target step t translates source position i.
        steps: ``(B,)`` number of real target steps of each sentence (steps ``t >= steps[b]`` are padding).

    Returns:
        A 0-dim tensor: ``Σ_{b, t real} Σ_i α[b, t, i] align[b, t, i]`` divided by the number of real steps.
        1 means every step puts all its weight on the aligned words.
    """
    real = real_steps_mask(steps, alpha.shape[1])  # (B, T)
    mass = (alpha * align).sum(-1)  # (B, T)
    return mass[real].sum() / real.sum().clamp(min=1)


def alignment_error_rate(alpha: Tensor, align: Tensor, steps: Tensor) -> Tensor:
    """Alignment error rate of the hard links "step t → its most attended source position".

    With ``A`` the set of predicted links (one per real target step) and ``S`` the true links,
    ``AER = 1 - 2 |A ∩ S| / (|A| + |S|)``: 0 only when the predicted links are exactly the true ones, 1
    when none is right. A target word aligned to two source words has two true links but only one
    predicted link, so such words keep the AER above 0 even when every predicted link is right: see
    ``"aer_best"`` in :func:`attention_agreement`. Shapes as in :func:`aligned_mass`; returns a 0-dim
    tensor.
    """
    real = real_steps_mask(steps, alpha.shape[1])  # (B, T)
    hits = align.gather(-1, alpha.argmax(-1, keepdim=True)).squeeze(-1)  # (B, T): 1 if the argmax is aligned
    n_pred = real.sum()
    n_true = align[real].sum()
    return 1 - 2 * hits[real].sum() / (n_pred + n_true).clamp(min=1)


def shift_alignment(align: Tensor, src_len: Tensor, shift: int = 1) -> Tensor:
    """Move every link ``shift`` source positions to the right, then normalise each row to sum to 1.

    Args:
        align: ``(B, T, N)`` 0/1 true alignment.
        src_len: ``(B,)`` source lengths (``<eos>`` included); a link pushed past a sentence's last real
            position lands on that position (its ``<eos>``).

    Returns:
        ``(B, T, N)``: rows of real steps are distributions over the real source positions; rows that were
        all zero (padding steps) stay zero.
    """
    B, T, N = align.shape
    positions = torch.arange(N, device=align.device)
    target = torch.minimum(positions[None, :] + shift, (src_len - 1)[:, None]).clamp(min=0)  # (B, N)
    moved = torch.zeros_like(align).scatter_add(-1, target[:, None, :].expand(B, T, N), align)
    total = moved.sum(-1, keepdim=True)
    return torch.where(total > 0, moved / total.clamp(min=1e-12), moved)


@torch.no_grad()
def teacher_forced_attention(model: AttnSeq2Seq, pairs: Sequence[Pair], batch_size: int = 256):
    """Yield ``(batch, alpha)`` over ``pairs``: the weights ``α`` (B, T, N) under teacher forcing."""
    model.eval()
    for k in range(0, len(pairs), batch_size):
        batch = make_batch(pairs[k : k + batch_size], model.src_vocab, model.tgt_vocab)
        _, alpha = model(batch, return_attention=True)
        yield batch, alpha


def attention_agreement(model, pairs: Sequence[Pair], shift: int = 0, batch_size: int = 256) -> dict:
    """Agreement of the model's attention with the true alignment (or with it shifted by ``shift``).

    Under teacher forcing, over every target word of every pair (the ``<eos>`` step left out, as in
    :func:`attnbook.models.alignment_agreement`). Returns ``{"mass": mean weight on the aligned words,
    "aer": alignment error rate of the argmax links, "aer_best": the lowest AER that one link per step
    can reach (every predicted link right; above 0 when some word is aligned to two source words),
    "link_precision": the share of steps whose most attended position is truly aligned (1 when every
    link is right), "uniform_mass": what uniform attention over the real source positions would score}``.
    Works for every model that returns its weights (Luong and Bahdanau).
    """
    mass = aer_hits = n_steps = n_true = uniform = 0.0
    for batch, alpha in teacher_forced_attention(model, pairs, batch_size):
        align = (
            batch.align if shift == 0 else (shift_alignment(batch.align, batch.src_len, shift) > 0).float()
        )
        steps = batch.tgt_len - 1  # words only, no <eos>
        real = real_steps_mask(steps, alpha.shape[1])
        n = float(real.sum())
        mass += float(aligned_mass(alpha, align, steps)) * n
        hits = align.gather(-1, alpha.argmax(-1, keepdim=True)).squeeze(-1)
        aer_hits += float(hits[real].sum())
        n_true += float(align[real].sum())
        uniform += float((align.sum(-1) / batch.src_len[:, None])[real].sum())
        n_steps += n
    return {
        "mass": mass / n_steps,
        "aer": 1 - 2 * aer_hits / (n_steps + n_true),
        "aer_best": 1 - 2 * n_steps / (n_steps + n_true),
        "link_precision": aer_hits / n_steps,
        "uniform_mass": uniform / n_steps,
    }


def train_guided(
    model: AttnSeq2Seq,
    pairs: Sequence[Pair],
    target: Callable[[Batch], Tensor] | None = None,
    weight: float = 1.0,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 5e-3,
    clip: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> dict:
    """Train like :func:`attnbook.models.train`, optionally pulling the attention towards ``target``.

    The loss is the cross-entropy of the next word (padding ignored) plus, if ``target`` is given,
    ``weight`` times the cross-entropy ``-Σ_i target_i log α^t_i`` between ``target(batch)`` (B, T, N) and
    the model's weights, averaged over the real target steps. With ``target=None`` this is exactly the
    training of :func:`attnbook.models.train` (same batches, same optimiser, same seed handling).
    Returns ``{"loss": mean total loss per epoch, "seconds": wall time}``.
    """
    from attnbook.progress import progress as _progress

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = (len(pairs) + batch_size - 1) // batch_size
    steps = (
        (e, b)
        for e in range(epochs)
        for b in iterate_batches(
            pairs,
            batch_size,
            shuffle=True,
            seed=seed + e,
            src_vocab=model.src_vocab,
            tgt_vocab=model.tgt_vocab,
        )
    )
    if progress:
        steps = _progress(steps, desc=desc or f"training {type(model).__name__}", total=epochs * n_batches)
    epoch_losses = [[] for _ in range(epochs)]
    start = time.perf_counter()
    model.train()
    for epoch, batch in steps:
        logits, alpha = model(batch, return_attention=True)  # (B, T, n_vocab), (B, T, N)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD)
        if target is not None:
            real = real_steps_mask(batch.tgt_len, alpha.shape[1])  # (B, T)
            per_step = -(target(batch) * torch.log(alpha.clamp(min=1e-9))).sum(-1)  # (B, T)
            loss = loss + weight * per_step[real].mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        epoch_losses[epoch].append(loss.item())
    model.eval()
    return {"loss": [sum(v) / len(v) for v in epoch_losses], "seconds": time.perf_counter() - start}


@torch.no_grad()
def _check_luong(model, name: str) -> None:
    if not isinstance(model, AttnSeq2Seq) or model.input_feeding:
        raise ValueError(f"{name} supports Luong models (AttnSeq2Seq) without input feeding only")


@torch.no_grad()
def teacher_forced_predictions(model: AttnSeq2Seq, batch: Batch, weights: Tensor | None = None):
    """Teacher-forced next-word predictions of a Luong model on ``batch``: ``(ids (B, T), weights (B, T, N))``.

    With ``weights`` (B, T, N) given, they replace the model's own attention weights and everything else
    (decoder states, encoder states, the layers after the attention) stays the same: an intervention.
    Only for models without input feeding (their decoder states do not depend on the weights).
    """
    _check_luong(model, "teacher_forced_predictions")
    model.eval()
    H, context = model.encoder(batch.src, batch.src_len)  # (B, N, d), (B, d)
    S, _ = model.decoder(model.tgt_embedding(batch.tgt_in), context[None])  # (B, T, d)
    if weights is None:
        mask = source_mask(batch.src_len, batch.src.shape[1])  # (B, N)
        weights = softmax(model.scores(S, H), dim=-1, mask=mask[:, None, :])  # (B, T, N)
    s_tilde = torch.tanh(model.W_c(torch.cat([attention_value(weights, H), S], dim=-1)))  # (B, T, d)
    return model.W_y(s_tilde).argmax(-1), weights


def teacher_forced_accuracy(
    model: AttnSeq2Seq, pairs: Sequence[Pair], uniform_attention: bool = False, batch_size: int = 256
) -> float:
    """Fraction of target words (``<eos>`` included) predicted exactly under teacher forcing.

    With ``uniform_attention=True`` every step's weights are replaced by uniform weights over the real
    source positions (everything else unchanged): if the accuracy falls, the outputs depend on where the
    model attends. Only for models without input feeding.
    """
    _check_luong(model, "teacher_forced_accuracy")
    correct = total = 0
    for k in range(0, len(pairs), batch_size):
        batch = make_batch(pairs[k : k + batch_size], model.src_vocab, model.tgt_vocab)
        uniform = None
        if uniform_attention:  # the softmax of equal scores over the real positions
            mask = source_mask(batch.src_len, batch.src.shape[1])  # (B, N)
            zeros = torch.zeros(*batch.tgt_in.shape, batch.src.shape[1], dtype=model.W_y.weight.dtype)
            uniform = softmax(zeros, dim=-1, mask=mask[:, None, :])
        predicted, _ = teacher_forced_predictions(model, batch, uniform)  # (B, T)
        real = batch.tgt_out != PAD
        correct += int((predicted == batch.tgt_out)[real].sum())
        total += int(real.sum())
    return correct / total
