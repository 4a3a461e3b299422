"""CRAFT: contrastive RNA-ATAC fine-tuning (LeRoy 2025, ch. 5).

A CLIP-style dual encoder (Radford 2021): an Atacformer encodes a cell's regions, a
Geneformer-style rank encoder its genes; linear projections bring both into one space,
where after L2 normalisation the similarity of every ATAC cell with every RNA cell of a
batch, scaled by a learned inverse temperature, is scored by a symmetric cross-entropy
whose targets are the true pairs. A one-hidden-layer decoder predicts log-normalised
expression from the ATAC embedding (RNA imputation), trained in the same loss.

The model is trained by the package's one loop (:func:`atacformer.train.pretrain`,
``objective="craft"``); ``atacformer embed`` puts either modality into the shared space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig
from atacformer.models.atacformer.modeling_atacformer import AtacformerModel
from atacformer.models.craft.configuration_craft import CraftConfig
from atacformer.models._collate import pad_token_lists
from atacformer.models.craft.rank_encoder import RankEncoder, rank_genes


def clip_loss(atac: torch.Tensor, rna: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric cross-entropy of CLIP over a batch of pairs.

    Parameters
    ----------
    atac, rna
        (B, P) unit-length embeddings; row i of each is one cell.
    logit_scale
        Log inverse temperature (a scalar).

    Returns
    -------
    loss, logits
        The mean of the ATAC->RNA and RNA->ATAC cross-entropies, and the (B, B) logits
        (rows: ATAC cells, columns: RNA cells).
    """
    logits = logit_scale.exp() * atac @ rna.T  # (B, B)
    target = torch.arange(len(atac), device=atac.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2, logits


def rna_inputs(counts, medians: np.ndarray, config: CraftConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``rna_ids`` / ``rna_mask`` (B, G) of cells' counts (columns: ``config.gene_names``):
    their genes ranked as the model reads them (:func:`rank_genes` with the model's medians,
    gene tokens, ``max_genes`` and ``<cls>``), padded."""
    ranked = rank_genes(counts, medians, np.asarray(config.gene_token_ids, dtype=np.int64), config.max_genes,
                        config.rna.get("cls_token_id"))
    return pad_token_lists(ranked, config.rna.get("pad_token_id", 0))


@dataclass
class CraftOutput:
    loss: torch.Tensor
    contrastive_loss: torch.Tensor
    impute_loss: torch.Tensor | None
    logits: torch.Tensor


class CraftModel(PretrainedMixin, nn.Module):
    """The CRAFT dual encoder.

    Parameters
    ----------
    config
        A :class:`CraftConfig`.
    vocab
        The ATAC vocabulary (saved with the model).

    Examples
    --------
    >>> from atacformer import Vocabulary
    >>> v = Vocabulary(["chr1"] * 50, range(0, 5000, 100), range(100, 5100, 100))
    >>> atac = AtacformerConfig.for_vocab(v, hidden_size=16, num_layers=0, num_heads=2,
    ...                                   intermediate_size=32)
    >>> rna = dict(vocab_size=8, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
    ...            max_positions=8)
    >>> m = CraftModel(CraftConfig(atac=atac.to_dict(), rna=rna, gene_names=list("abcde"),
    ...                            gene_token_ids=[3, 4, 5, 6, 7], projection_dim=8), vocab=v)
    >>> m.embed(**m.prepare_inputs([[1, 2], [3]])).shape
    torch.Size([2, 8])
    """

    config_class = CraftConfig
    base_model_prefix = "atacformer"

    def __init__(self, config: CraftConfig, vocab=None):
        super().__init__()
        self.config = config
        self.vocab = vocab
        atac = AtacformerConfig.from_dict(config.atac)
        self.atacformer = AtacformerModel(atac)
        self.rna_encoder = RankEncoder(**config.rna)
        self.atac_projection = nn.Linear(atac.hidden_size, config.projection_dim, bias=False)
        self.rna_projection = nn.Linear(config.rna.get("hidden_size", 128), config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        n_genes = len(config.gene_names)
        self.imputer = nn.Sequential(nn.Linear(config.projection_dim, config.impute_hidden_size), nn.GELU(),
                                     nn.Linear(config.impute_hidden_size, n_genes))
        # each gene's non-zero median over the training cells (rank normalisation), saved with the weights
        self.register_buffer("gene_medians", torch.ones(n_genes, dtype=torch.float64))

    # -- inputs ---------------------------------------------------------------------------
    def prepare_inputs(self, cells, max_length: int | None = None, rng: np.random.Generator | None = None):
        """ATAC inputs, as :meth:`AtacformerModel.prepare_inputs`."""
        return self.atacformer.prepare_inputs(cells, max_length or self.config.max_length, rng)

    # -- the two towers -------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              pooling: str | None = None) -> torch.Tensor:
        """ATAC cells (B, L) -> unit-length shared-space embeddings (B, P)."""
        z = self.atacformer.embed(input_ids, attention_mask, pooling)
        return F.normalize(self.atac_projection(z), dim=-1)

    def embed_rna(self, rna_ids: torch.Tensor, rna_mask: torch.Tensor) -> torch.Tensor:
        """Ranked gene tokens (B, G) -> unit-length shared-space embeddings (B, P)."""
        return F.normalize(self.rna_projection(self.rna_encoder.embed(rna_ids, rna_mask)), dim=-1)

    def impute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted log-normalised expression (B, n_genes) from ATAC cells."""
        return self.imputer(self.embed(input_ids, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rna_ids: torch.Tensor,
                rna_mask: torch.Tensor, rna_targets: torch.Tensor | None = None) -> CraftOutput:
        """Loss of a batch of paired cells (row i of the ATAC and RNA inputs is one cell)."""
        a = self.embed(input_ids, attention_mask)  # (B, P)
        r = self.embed_rna(rna_ids, rna_mask)  # (B, P)
        scale = self.logit_scale.clamp(max=math.log(100.0))
        contrastive, logits = clip_loss(a, r, scale)
        loss, impute = contrastive, None
        if rna_targets is not None and self.config.impute_weight:
            impute = F.mse_loss(self.imputer(a), rna_targets.to(a.dtype))
            loss = loss + self.config.impute_weight * impute
        return CraftOutput(loss, contrastive, impute, logits)
