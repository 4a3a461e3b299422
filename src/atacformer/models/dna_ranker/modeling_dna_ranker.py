"""The ATAC-aware DNA ranking model (LeRoy 2025, ch. 3): a DNA encoder and a chromatin
accessibility scorer (CAS) head score each of a span's regions; a list-wise softmax loss
(ListNet, Cao 2007; the softmax loss of Rax, Jagerman 2022) trains both to order the regions
by accessibility. The thesis fine-tunes the Nucleotide Transformer encoder of SegmentNT; here
the encoder is a small convolutional network that trains on CPUs.

Examples
--------
>>> import torch
>>> model = DnaRankerModel(DnaRankerConfig(region_length=64, channels=[8], kernel_sizes=[5],
...                                        pool_sizes=[2]))
>>> codes = torch.randint(0, 4, (2, 3, 64))               # (B, regions, bases) 2-bit codes
>>> out = model(codes, accessibility=torch.tensor([[0.0, 0.2, 0.5], [0.3, 0.0, 0.1]]))
>>> out.scores.shape, out.loss.ndim
(torch.Size([2, 3]), 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.dna_ranker.configuration_dna_ranker import DnaRankerConfig


def one_hot(codes: torch.Tensor) -> torch.Tensor:
    """(..., L) 2-bit codes (``A C G T`` = 0..3, anything else 4) -> (..., 4, L) float one-hot,
    ``N`` all zeros."""
    x = F.one_hot(codes.long().clamp(0, 4), 5)[..., :4]  # (..., L, 4)
    return x.transpose(-1, -2).float()


def target_distribution(accessibility: torch.Tensor, kind: str = "rank", temperature: float = 0.1) -> torch.Tensor:
    """Target probabilities over each span's regions from their accessibility (B, R).

    ``"rank"``: the regions' ranks (0 = least accessible; tied regions share their mean rank)
    divided by their sum. ``"softmax"``: ``softmax(accessibility / temperature)``.

    Examples
    --------
    >>> target_distribution(torch.tensor([[0.0, 0.5, 0.2]])).mul(3).round().tolist()
    [[0.0, 2.0, 1.0]]
    """
    a = accessibility.float()
    if kind == "softmax":
        return torch.softmax(a / temperature, dim=-1)
    if kind != "rank":
        raise ValueError(f"unknown target kind {kind!r}")
    less = (a.unsqueeze(-1) > a.unsqueeze(-2)).float().sum(-1)   # regions below each one
    ties = (a.unsqueeze(-1) == a.unsqueeze(-2)).float().sum(-1) - 1
    ranks = less + ties / 2
    total = ranks.sum(-1, keepdim=True)
    uniform = torch.full_like(ranks, 1.0 / a.shape[-1])
    return torch.where(total > 0, ranks / total.clamp_min(1e-12), uniform)


def listnet_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over spans of the cross-entropy ``-sum_i target_i log softmax(scores)_i``.

    Examples
    --------
    >>> round(float(listnet_loss(torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))), 4)
    1.0986
    """
    return -(target * torch.log_softmax(scores.float(), dim=-1)).sum(-1).mean()


@dataclass
class DnaRankerOutput:
    """``scores`` (B, R): higher = more accessible; ``loss``: the list-wise loss when a target
    was given."""

    scores: torch.Tensor
    loss: torch.Tensor | None = None


class DnaRankerModel(PretrainedMixin, nn.Module):
    """Convolutional DNA encoder + CAS head scoring every region of a span.

    Parameters
    ----------
    config
        A :class:`DnaRankerConfig`.
    vocab
        Unused (the model reads bases, not region tokens); kept for the folder convention.
    """

    config_class = DnaRankerConfig

    def __init__(self, config: DnaRankerConfig, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        layers, c_in = [], 4
        for c, k, p in zip(config.channels, config.kernel_sizes, config.pool_sizes):
            layers += [nn.Conv1d(c_in, c, k, padding=k // 2), nn.ReLU()]
            if p > 1:
                layers.append(nn.MaxPool1d(p, ceil_mode=True))
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * c_in, config.head_hidden), nn.ReLU(),
                                  nn.Linear(config.head_hidden, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4, L) one-hot -> (N, 2C) max and mean pooled encoder output."""
        h = self.encoder(x)  # (N, C, L')
        return torch.cat([h.amax(-1), h.mean(-1)], dim=-1)

    def score(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, R, L) base codes -> (B, R) accessibility scores."""
        b, r, l = codes.shape
        x = one_hot(codes.reshape(b * r, l))  # (B*R, 4, L)
        s = self.head(self.encode(x)).squeeze(-1)
        if self.config.reverse_complement:  # A<->T, C<->G is the channel flip; read backwards
            s = (s + self.head(self.encode(x.flip(-1).flip(-2))).squeeze(-1)) / 2
        return s.reshape(b, r)

    def forward(self, codes: torch.Tensor, accessibility: torch.Tensor | None = None) -> DnaRankerOutput:
        """Scores of the regions (``codes``: (B, R, L)); the list-wise loss against their
        ``accessibility`` (B, R) when given."""
        scores = self.score(codes)
        loss = None
        if accessibility is not None:
            target = target_distribution(accessibility, self.config.target, self.config.target_temperature)
            loss = listnet_loss(scores, target)
        return DnaRankerOutput(scores=scores, loss=loss)
