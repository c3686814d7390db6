"""Plain torch.nn.Modules used as ``--model tests.core._plain_models:Net`` targets."""
from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """Embedding + MLP blocks + tied decoder, a persistent and a non-persistent buffer."""

    def __init__(self, vocab: int = 50, hidden: int = 16, layers: int = 2, tie: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden)) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.dec = nn.Linear(hidden, vocab, bias=False)
        if tie:
            self.dec.weight = self.emb.weight
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(hidden), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        for b in self.blocks:
            h = h + b(h)
        return self.dec(self.norm(h) * self.scale)
