"""TOSICA (Chen 2023): cell-type annotation through attention over gene-set tokens.

A cell's log-normalised expression ``x`` (B, G) becomes one token per gene set: for each of
``m`` parallel copies k, token_p[k] = sum_g x_g * (M ⊙ W_k)[g, p], so a token only ever sees
the genes of its set. A learnable ``<cls>`` token joins them, self-attention blocks mix them,
and a linear classifier reads the ``<cls>`` output. The ``<cls>`` row of the last block's
attention (averaged over heads) says which gene sets a cell's call rests on.

The mask is a buffer multiplied into the weight in every forward pass, and weights outside it
start at zero: their gradient is exactly zero, so they stay zero under any optimizer step
(AdamW's decay of zero included). The dense weight holds G x P x m numbers (600 genes x 674
Reactome sets x 48 = 19 M); restrict the genes (e.g. to highly variable ones) for large panels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.tosica.configuration_tosica import TosicaConfig


@dataclass
class TosicaOutput:
    """``loss`` (cross-entropy, when labels are given), ``logits`` (B, C) and, on request,
    ``cls_attention`` (B, P): the last block's ``<cls>`` attention over the gene-set tokens,
    averaged over heads."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    cls_attention: torch.Tensor | None = None


class MaskedGeneSetEmbedding(nn.Module):
    """Genes -> one ``m``-wide token per gene set through ``W ⊙ M`` (``m`` parallel copies).

    Parameters
    ----------
    mask
        (G, P) bool membership matrix.
    embed_dim
        ``m``.

    Examples
    --------
    >>> emb = MaskedGeneSetEmbedding(torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool), 4)
    >>> emb(torch.ones(2, 3)).shape
    torch.Size([2, 2, 4])
    """

    def __init__(self, mask: torch.Tensor, embed_dim: int):
        super().__init__()
        g, p = mask.shape
        self.embed_dim = embed_dim
        self.register_buffer("mask", mask.to(torch.float32)[:, :, None], persistent=False)  # (G, P, 1)
        self.weight = nn.Parameter(torch.empty(g, p, embed_dim))  # (G, P, m)
        self.bias = nn.Parameter(torch.zeros(p, embed_dim))  # (P, m)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # uniform(+-1/sqrt(fan_in)) as nn.Linear, fan_in = the set's size; zero outside the mask
        fan_in = self.mask.sum(0, keepdim=True).clamp(min=1)  # (1, P, 1)
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(fan_in.rsqrt()).mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask  # (G, P, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, p, m = self.weight.shape
        out = x @ self.masked_weight().reshape(g, p * m)  # (B, P*m)
        return out.view(x.shape[0], p, m) + self.bias  # (B, P, m)


class TosicaBlock(nn.Module):
    """Pre-norm self-attention + feed-forward block that can return its attention weights."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = h.shape  # (B, 1+P, m)
        hd = d // self.num_heads
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4)  # (B, H, N, hd)
        att = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), dim=-1)  # (B, H, N, N)
        o = (self.attn_drop(att) @ v).transpose(1, 2).reshape(b, n, d)
        h = h + self.drop(self.proj(o))
        h = h + self.drop(self.mlp(self.norm2(h)))
        return h, att


class TosicaModel(PretrainedMixin, nn.Module):
    """TOSICA for cell-type annotation.

    Parameters
    ----------
    config
        A :class:`TosicaConfig` (genes, gene sets, labels and the network's shape).
    vocab
        Unused (TOSICA reads genes, not regions); kept for the model-folder interface.

    Examples
    --------
    >>> cfg = TosicaConfig(gene_names=list("ABCD"), pathway_names=["P", "Q"], gene_sets=[[0, 1], [2, 3]],
    ...                    label_names=["x", "y"], embed_dim=8, num_heads=2)
    >>> out = TosicaModel(cfg)(torch.rand(3, 4), labels=torch.tensor([0, 1, 0]), output_attentions=True)
    >>> out.logits.shape, out.cls_attention.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    """

    config_class = TosicaConfig

    def __init__(self, config: TosicaConfig, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        d = config.embed_dim
        self.embed = MaskedGeneSetEmbedding(torch.from_numpy(config.mask()), d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(TosicaBlock(d, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(config.label_names))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> TosicaOutput:
        """``x`` (B, G) log-normalised expression in ``config.gene_names`` order; ``labels``
        (B,) class indices."""
        tokens = self.embed(x)  # (B, P, m)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)  # (B, 1+P, m)
        att = None
        for block in self.blocks:
            h, att = block(h)
        logits = self.head(self.norm(h[:, 0]))  # (B, C)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        cls_att = att[:, :, 0, 1:].mean(1) if (output_attentions and att is not None) else None  # (B, P)
        return TosicaOutput(loss=loss, logits=logits, cls_attention=cls_att)


@torch.no_grad()
def predict_cells(model: TosicaModel, X, *, batch_size: int = 256, progress: bool = False):
    """Class probabilities and ``<cls>`` attention of cells (no AnnData; dense or CSR ``X``
    already in the model's gene order and normalisation).

    Returns
    -------
    probs : numpy.ndarray
        (cells, classes) softmax probabilities.
    attention : numpy.ndarray
        (cells, pathways) last-block ``<cls>`` attention, averaged over heads (each row sums
        to 1 minus the attention ``<cls>`` pays to itself).

    Examples
    --------
    >>> cfg = TosicaConfig(gene_names=list("AB"), pathway_names=["P"], gene_sets=[[0, 1]],
    ...                    label_names=["x", "y"], embed_dim=4, num_heads=2)
    >>> probs, att = predict_cells(TosicaModel(cfg), np.ones((5, 2), np.float32))
    >>> probs.shape, att.shape
    ((5, 2), (5, 1))
    """
    import scipy.sparse as sp
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    n = X.shape[0]
    probs = np.zeros((n, len(model.config.label_names)), np.float32)
    att = np.zeros((n, model.config.n_pathways), np.float32)
    for a in tqdm(range(0, n, batch_size), disable=not progress, desc="TOSICA", unit="batch"):
        chunk = X[a:a + batch_size]
        chunk = chunk.toarray() if sp.issparse(chunk) else np.asarray(chunk)
        out = model(torch.from_numpy(chunk.astype(np.float32)).to(device), output_attentions=True)
        probs[a:a + len(chunk)] = torch.softmax(out.logits.float(), -1).cpu().numpy()
        if out.cls_attention is not None:
            att[a:a + len(chunk)] = out.cls_attention.float().cpu().numpy()
    return probs, att
