"""Building blocks for deterministic grading cases (float64, distinct sizes on every axis)."""

from __future__ import annotations

import torch

DTYPE = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """Standard normal float64 tensor of ``shape``, times ``scale``."""
    return torch.randn(shape, generator=gen, dtype=DTYPE) * scale


def tied(*shape: int, value: float = 0.5) -> torch.Tensor:
    """A tensor whose entries are all equal (tied scores)."""
    return torch.full(shape, value, dtype=DTYPE)
