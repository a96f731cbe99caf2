"""The book's worked example: "i am a student" -> "je suis étudiant", small enough to check by hand.

The states are chosen by us (not learned) so that every number can be verified with pencil and paper:
4 source positions, 3 decoder steps, dimension d = 4.

* ``H``: ``(N, d) = (4, 4)``, encoder states ``h_1..h_4`` for "i", "am", "a", "student".
* ``S``: ``(T, d) = (3, 4)``, decoder states ``s_1..s_3`` at the steps that emit "je", "suis", "étudiant".
* Output layer (Luong): ``u_t = [a_t; s_t]`` (8,), ``s~_t = tanh(W_c u_t + b_c)`` (4,),
  ``y^_t = softmax(W_y s~_t + b_y)`` over ``TARGET_VOCAB`` (5,).

Functions return fresh float64 tensors, so a notebook may change them freely.
"""

from __future__ import annotations

import torch

SOURCE = ("i", "am", "a", "student")
TARGET = ("je", "suis", "étudiant")
TARGET_VOCAB = ("<eos>", "je", "suis", "étudiant", "un")
#: the step that emits "étudiant" (1-based, as in the text: t = 3)
STEP_ETUDIANT = 3


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def encoder_states() -> torch.Tensor:
    """``H``: ``(4, 4)``; row i is ``h_{i+1}``."""
    return _t([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 2]])


def decoder_states() -> torch.Tensor:
    """``S``: ``(3, 4)``; row t-1 is ``s_t`` (Luong: the current state is the query)."""
    return _t([[2, 0, 0.5, 0], [0, 1.5, 0, 0.5], [0, 0.5, 1, 1]])


def output_layer() -> dict[str, torch.Tensor]:
    """``W_c (4, 8)``, ``b_c (4,)``, ``W_y (5, 4)``, ``b_y (5,)``."""
    W_c = 0.5 * torch.cat([torch.eye(4), torch.eye(4)], dim=1).double()
    return {
        "W_c": W_c,
        "b_c": torch.zeros(4, dtype=torch.float64),
        "W_y": _t([[0, 0, 0, 0], [2, 0, 0, -1], [-1, 2, -1, 0], [-1, -1, 1, 2], [0, 1, -1, -1]]),
        "b_y": _t([0.5, 0, 0, 0, 0]),
    }
