"""The gene-level multimodal RNA + ATAC model (thesis ch. 4, "a multimodal foundation model
with gene-level ATAC aggregation").

A cell is, per modality, a set of gene tokens with binned values (RNA expression, or ATAC as
gene activity over the same genes; see :mod:`~atacformer.models.multimodal.values`). A
token's input is gene embedding + value-bin embedding + modality embedding; one encoder
(SDPA attention, :class:`~atacformer.models._layers.Encoder`; the thesis used a Performer)
reads each modality's tokens on their own; a modality's cell embedding is the mean of its
final hidden states over real tokens (or a ``<cls>`` output), and the joint cell embedding is
the mean of the modality embeddings present.

Pretraining (:class:`MultimodalForMaskedValues`) masks a fraction of value tokens and
predicts their bins (cross-entropy over the bins). As in the thesis, the reconstruction of
both modalities reads the same joint embedding: each masked token's decoder input is its
final hidden state (``value_decoder="token"``; or only its gene's embedding, ``"cell"``) plus
a projection of the joint cell embedding, so on a paired cell the RNA side helps reconstruct
the ATAC side and the other way round. RNA-only, ATAC-only and paired batches are alternated
(:class:`~atacformer.train.collate_multimodal.MultimodalBatcher`). A profile decoder maps a
cell embedding to every gene's bin: from the ATAC cell embedding to the RNA profile on paired
batches (cross-modal imputation, ``imputation_weight``) and, optionally, from the joint
embedding to each modality's profile (``profile_weight``).
:class:`MultimodalForCellClassification` puts a label head on the joint embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._layers import Encoder, init_weights, mean_pool
from atacformer.models._pretrained import PretrainedMixin
from atacformer.models.multimodal.configuration_multimodal import MODALITIES, MultimodalConfig
from atacformer.models.multimodal.values import gene_tokens


class _MultimodalLoading(PretrainedMixin):
    """Saving/loading and input preparation shared by the multimodal classes."""

    config_class = MultimodalConfig
    base_model_prefix = "multimodal"

    def prepare_inputs(self, rna=None, gene_activity=None, rng: np.random.Generator | None = None,
                       profile: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs (``rna_ids``, ``rna_values``, ``rna_mask``, ``atac_*``) from cells x
        ``n_genes`` count matrices (RNA counts, ATAC gene activity; either may be None),
        binned with the config's fitted bins. ``profile=True`` adds ``rna_profile`` (every
        gene's RNA bin, the imputation target)."""
        c = self.config
        out: dict[str, torch.Tensor] = {}
        for m, x in (("rna", rna), ("atac", gene_activity)):
            if x is None:
                continue
            if x.shape[1] != c.n_genes:
                raise ValueError(f"{m}: the matrix has {x.shape[1]} genes, the model {c.n_genes} "
                                 "(columns must be the model's genes, in config.gene_names order)")
            t = gene_tokens(x, c.value_bins(m), c.max_genes, c.pad_token_id, rng, c.target_sum,
                            profile=profile and m == "rna")
            out[f"{m}_ids"], out[f"{m}_values"], out[f"{m}_mask"] = t.ids, t.values, t.mask
            if t.profile is not None:
                out["rna_profile"] = t.profile
        if not out:
            raise ValueError("give rna, gene_activity or both")
        return out


class MultimodalEmbeddings(nn.Module):
    """Gene embedding + value-bin embedding (one block of rows per modality) + modality
    embedding, summed."""

    def __init__(self, config: MultimodalConfig):
        super().__init__()
        d = config.hidden_size
        self.n_value_ids = config.n_value_ids
        self.gene_embeddings = nn.Embedding(config.n_tokens, d, padding_idx=config.pad_token_id)
        self.value_embeddings = nn.Embedding(len(MODALITIES) * config.n_value_ids, d)
        self.modality_embeddings = nn.Embedding(len(MODALITIES), d)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, modality: int) -> torch.Tensor:
        """``ids``, ``values`` (B, L) -> (B, L, D)."""
        x = self.gene_embeddings(ids)  # (B, L, D)
        x = x + self.value_embeddings(values + modality * self.n_value_ids)  # (B, L, D)
        return x + self.modality_embeddings.weight[modality]  # (B, L, D)


def _modality_index(modality: str) -> int:
    try:
        return MODALITIES.index(modality)
    except ValueError:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}") from None


class MultimodalModel(_MultimodalLoading, nn.Module):
    """The backbone: embeddings + encoder -> per-token hidden states and cell embeddings.

    Examples
    --------
    >>> cfg = MultimodalConfig(n_genes=50, hidden_size=32, num_layers=2, num_heads=4,
    ...                        intermediate_size=64)
    >>> model = MultimodalModel(cfg)
    >>> ids, values = torch.tensor([[3, 7, 9]]), torch.tensor([[1, 5, 2]])
    >>> hidden, cell = model.encode(ids, values, ids != cfg.pad_token_id, "rna")
    >>> hidden.shape, cell.shape
    (torch.Size([1, 3, 32]), torch.Size([1, 32]))
    """

    is_base_model = True

    def __init__(self, config: MultimodalConfig, vocab=None):
        super().__init__()
        self.config = config
        self.vocab = None  # the genes are config.gene_names; no region vocabulary
        self.embeddings = MultimodalEmbeddings(config)
        self.encoder = Encoder(config.num_layers, config.hidden_size, config.num_heads,
                               config.intermediate_size, config.dropout, config.activation,
                               config.norm_first, config.layer_norm_eps)
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def encode(self, ids: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
               modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One modality's tokens -> (hidden states of the gene tokens (B, L, D), cell
        embeddings (B, D)). ``mask`` (B, L) bool, True = real token (default: not padding)."""
        c = self.config
        mod = _modality_index(modality)
        if mask is None:
            mask = ids != c.pad_token_id
        mask = mask.bool()
        if c.pooling == "cls":  # <cls> in front, value id 0
            b = ids.shape[0]
            ids = torch.cat([ids.new_full((b, 1), c.cls_token_id), ids], dim=1)  # (B, 1 + L)
            values = torch.cat([values.new_zeros((b, 1)), values], dim=1)
            mask = torch.cat([mask.new_ones((b, 1)), mask], dim=1)
        hidden = self.encoder(self.embeddings(ids, values, mod), mask)  # (B, L', D)
        if c.pooling == "cls":
            return hidden[:, 1:], hidden[:, 0]
        return hidden, mean_pool(hidden, mask)  # (B, L, D), (B, D)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
                modality: str = "rna") -> torch.Tensor:
        """Hidden states (B, L, D) of one modality's gene tokens."""
        return self.encode(ids, values, mask, modality)[0]

    def encode_modalities(self, rna_ids=None, rna_values=None, rna_mask=None, atac_ids=None,
                          atac_values=None, atac_mask=None) -> dict[str, tuple]:
        """``{modality: (hidden (B, L, D), cell (B, D), has_tokens (B,))}`` of the modalities
        given (each encoded on its own)."""
        out = {}
        for m, ids, values, mask in (("rna", rna_ids, rna_values, rna_mask),
                                     ("atac", atac_ids, atac_values, atac_mask)):
            if ids is None:
                continue
            if values is None:
                raise ValueError(f"{m}_ids given without {m}_values")
            if mask is None:
                mask = ids != self.config.pad_token_id
            hidden, cell = self.encode(ids, values, mask, m)
            out[m] = (hidden, cell, mask.bool().any(1))
        if not out:
            raise ValueError("no modality given: pass rna_* and/or atac_* inputs")
        return out

    def embed_modalities(self, rna_ids=None, rna_values=None, rna_mask=None, atac_ids=None,
                         atac_values=None, atac_mask=None, **_) -> dict[str, torch.Tensor]:
        """Cell embeddings (B, D) of the modalities given, and ``"joint"`` (see
        :func:`joint_embedding`)."""
        enc = self.encode_modalities(rna_ids, rna_values, rna_mask, atac_ids, atac_values, atac_mask)
        out = {m: cell for m, (_, cell, _) in enc.items()}
        out["joint"] = joint_embedding(out, {m: has for m, (_, _, has) in enc.items()})
        return out

    def embed(self, **inputs) -> torch.Tensor:
        """The joint cell embedding (B, D) of the inputs (either or both modalities)."""
        return self.embed_modalities(**inputs)["joint"]


def joint_embedding(embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the modality embeddings (B, D) over the modalities in which the cell has at
    least one token (``present[m]`` (B,) bool); a cell with no token anywhere gets zeros.
    With both modalities non-empty this is ``(z_rna + z_atac) / 2``."""
    zs = [embeddings[m] for m in MODALITIES if m in embeddings]  # each (B, D)
    ws = [present[m].to(zs[0].dtype) for m in MODALITIES if m in embeddings]  # each (B,)
    num = sum(w[:, None] * z for w, z in zip(ws, zs))  # (B, D)
    den = sum(ws).clamp(min=1.0)[:, None]  # (B, 1)
    return num / den


@dataclass
class MultimodalOutput:
    """Outputs of :class:`MultimodalForMaskedValues`.

    ``loss`` = ``masked_loss`` + ``imputation_weight`` x ``imputation_loss`` +
    ``profile_weight`` x ``profile_loss`` (the parts that have targets; None without any).
    ``masked_loss``: cross-entropy over the value bins, mean over the masked positions of the
    modalities present. ``imputation_loss``: every gene's RNA bin from the ATAC cell
    embedding, mean over cells x genes. ``profile_loss``: every gene's bin of each modality
    present from the joint embedding, mean over cells x genes (and modalities).
    ``rna_logits`` / ``atac_logits`` (B, L, n_bins + 1) per token; ``imputation_logits``
    (B, n_genes, n_bins + 1) when trained or asked for. ``cell_embedding`` (B, D) is the joint
    embedding.
    """

    loss: torch.Tensor | None
    masked_loss: torch.Tensor | None
    imputation_loss: torch.Tensor | None
    profile_loss: torch.Tensor | None
    rna_logits: torch.Tensor | None
    atac_logits: torch.Tensor | None
    imputation_logits: torch.Tensor | None
    rna_embedding: torch.Tensor | None
    atac_embedding: torch.Tensor | None
    cell_embedding: torch.Tensor


def _mean_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


class MultimodalForMaskedValues(_MultimodalLoading, nn.Module):
    """The multimodal model with its masked-value decoder and a profile decoder (a cell
    embedding -> every gene's bin of a modality), which gives the cross-modal imputation
    (ATAC cell embedding -> RNA profile, on paired batches) and, with
    ``config.profile_weight``, the reconstruction of each modality's whole profile from the
    joint embedding.

    Examples
    --------
    >>> cfg = MultimodalConfig(n_genes=50, hidden_size=32, num_layers=2, num_heads=4,
    ...                        intermediate_size=64)
    >>> model = MultimodalForMaskedValues(cfg)
    >>> ids, values = torch.tensor([[3, 7, 9]]), torch.tensor([[1, 6, 2]])  # 6 = <mask>
    >>> out = model(rna_ids=ids, rna_values=values, rna_mask=ids >= 0,
    ...             rna_targets=torch.tensor([[-100, 4, -100]]))
    >>> out.loss.ndim, out.cell_embedding.shape
    (0, torch.Size([1, 32]))
    """

    def __init__(self, config: MultimodalConfig, vocab=None):
        super().__init__()
        c = self.config = config
        self.vocab = None
        d, k = c.hidden_size, c.n_value_classes
        self.multimodal = MultimodalModel(config)
        self.joint_proj = nn.Linear(d, d)  # the joint cell embedding, added to every token
        self.value_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=c.layer_norm_eps))
        self.value_decoder = nn.Linear(d, len(MODALITIES) * k)  # one block of k logits per modality
        self.profile_transform = self.profile_decoder = None
        if c.imputation_weight > 0 or c.profile_weight > 0:
            self.profile_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(),
                                                   nn.LayerNorm(d, eps=c.layer_norm_eps))
            # one block of n_genes x k logits per modality
            self.profile_decoder = nn.Linear(d, len(MODALITIES) * c.n_genes * k)
        for m in (self.joint_proj, self.value_transform, self.value_decoder, self.profile_transform,
                  self.profile_decoder):
            if m is not None:
                m.apply(lambda mod: init_weights(mod, c.initializer_range))

    # -- pieces ------------------------------------------------------------------------
    def value_logits(self, hidden: torch.Tensor, joint: torch.Tensor, modality: str) -> torch.Tensor:
        """Per-token bin logits (B, L, n_bins + 1) of ``modality`` from its token states
        (B, L, D) and the joint cell embedding (B, D)."""
        k = self.config.n_value_classes
        h = self.value_transform(hidden + self.joint_proj(joint)[:, None])  # (B, L, D)
        mod = _modality_index(modality)
        w = self.value_decoder.weight[mod * k: (mod + 1) * k]  # (k, D)
        b = self.value_decoder.bias[mod * k: (mod + 1) * k]
        return F.linear(h, w, b)  # (B, L, k)

    def profile_logits(self, cell: torch.Tensor, modality: str) -> torch.Tensor:
        """Every gene's ``modality`` bin logits (B, n_genes, n_bins + 1) from cell embeddings (B, D)."""
        if self.profile_decoder is None:
            raise ValueError("this model has no profile decoder (config.imputation_weight and "
                             "config.profile_weight are 0)")
        g, k = self.config.n_genes, self.config.n_value_classes
        mod = _modality_index(modality)
        w = self.profile_decoder.weight[mod * g * k: (mod + 1) * g * k]  # (G k, D)
        b = self.profile_decoder.bias[mod * g * k: (mod + 1) * g * k]
        return F.linear(self.profile_transform(cell), w, b).view(cell.shape[0], g, k)  # (B, G, k)

    def imputation_logits(self, atac_embedding: torch.Tensor) -> torch.Tensor:
        """Every gene's RNA bin logits (B, n_genes, n_bins + 1) from ATAC cell embeddings (B, D)."""
        return self.profile_logits(atac_embedding, "rna")

    def cross_modal_logits(self, atac_ids: torch.Tensor, atac_values: torch.Tensor,
                           atac_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        """Cross-modal imputation: every gene's RNA bin logits (B, n_genes, n_bins + 1) from
        the ATAC (gene activity) input alone."""
        z = self.multimodal.encode(atac_ids, atac_values, atac_mask, "atac")[1]  # (B, D)
        return self.imputation_logits(z)

    # -- forward -----------------------------------------------------------------------
    def forward(self, rna_ids: torch.Tensor | None = None, rna_values: torch.Tensor | None = None,
                rna_mask: torch.Tensor | None = None, atac_ids: torch.Tensor | None = None,
                atac_values: torch.Tensor | None = None, atac_mask: torch.Tensor | None = None,
                rna_targets: torch.Tensor | None = None, atac_targets: torch.Tensor | None = None,
                rna_profile: torch.Tensor | None = None, atac_profile: torch.Tensor | None = None,
                return_imputation: bool = False) -> MultimodalOutput:
        """Encode RNA and/or ATAC tokens (an absent modality's inputs are None) and compute
        the losses there are targets for.

        Parameters
        ----------
        rna_ids, rna_values, rna_mask, atac_ids, atac_values, atac_mask
            (B, L_m) gene ids, value ids (masked positions hold ``config.mask_value_id``) and
            keep-masks (True = real token) of each modality present.
        rna_targets, atac_targets
            (B, L_m) the true bin at masked positions, -100 elsewhere.
        rna_profile, atac_profile
            (B, n_genes) every gene's bin (zeros included): the targets of the imputation
            (``rna_profile`` with the ATAC input) and of the profile reconstruction.
        return_imputation
            Return ``imputation_logits`` also without ``rna_profile``.
        """
        c = self.config
        enc = self.multimodal.encode_modalities(rna_ids, rna_values, rna_mask, atac_ids, atac_values,
                                                atac_mask)
        cells = {m: cell for m, (_, cell, _) in enc.items()}
        joint = joint_embedding(cells, {m: has for m, (_, _, has) in enc.items()})  # (B, D)
        masked_loss, logits = self._masked_loss(enc, joint, {"rna": rna_ids, "atac": atac_ids},
                                                {"rna": rna_targets, "atac": atac_targets})
        profiles = {"rna": rna_profile, "atac": atac_profile}
        imp_logits = imp_loss = profile_loss = None
        if "atac" in enc and self.profile_decoder is not None and c.imputation_weight > 0 and (
                rna_profile is not None or return_imputation):
            imp_logits = self.imputation_logits(cells["atac"])  # (B, G, k)
            if rna_profile is not None:
                imp_loss = _mean_ce(imp_logits, rna_profile)
        if c.profile_weight > 0:
            parts = [_mean_ce(self.profile_logits(joint, m), profiles[m]) for m in enc if profiles[m] is not None]
            profile_loss = sum(parts) / len(parts) if parts else None
        parts = [x for x in (masked_loss,) if x is not None]
        if imp_loss is not None:
            parts.append(c.imputation_weight * imp_loss)
        if profile_loss is not None:
            parts.append(c.profile_weight * profile_loss)
        loss = sum(parts) if parts else None
        if loss is not None and self.profile_decoder is not None and imp_loss is None and profile_loss is None:
            # DistributedDataParallel expects every parameter in every step's graph
            loss = loss + 0.0 * sum(p.sum() for p in (*self.profile_transform.parameters(),
                                                      *self.profile_decoder.parameters()))
        return MultimodalOutput(
            loss=loss, masked_loss=masked_loss, imputation_loss=imp_loss, profile_loss=profile_loss,
            rna_logits=logits.get("rna"), atac_logits=logits.get("atac"), imputation_logits=imp_logits,
            rna_embedding=cells.get("rna"), atac_embedding=cells.get("atac"), cell_embedding=joint)

    def _masked_loss(self, enc: dict, joint: torch.Tensor, ids: dict, targets: dict):
        """(mean cross-entropy over the masked positions of all modalities, or None without
        targets; per-token logits by modality)."""
        logits, ce_sum, n_masked = {}, joint.new_zeros(()), 0
        for m, (hidden, _, _) in enc.items():
            if self.config.value_decoder == "cell":  # the gene's identity only, not its token's state
                emb = self.multimodal.embeddings
                hidden = emb.gene_embeddings(ids[m]) + emb.modality_embeddings.weight[_modality_index(m)]
            logits[m] = self.value_logits(hidden, joint, m)  # (B, L, k)
            t = targets[m]
            if t is not None:
                ce_sum = ce_sum + F.cross_entropy(logits[m].reshape(-1, logits[m].shape[-1]).float(),
                                                  t.reshape(-1), ignore_index=-100, reduction="sum")
                n_masked = n_masked + (t != -100).sum()
        if not any(targets[m] is not None for m in enc):
            return None, logits
        # a batch without a masked position still gives a loss with a graph (zero)
        return ce_sum / torch.clamp(torch.as_tensor(n_masked, device=joint.device), min=1), logits

    def embed(self, **inputs) -> torch.Tensor:
        """The joint cell embedding (B, D) (see :meth:`MultimodalModel.embed`)."""
        return self.multimodal.embed(**inputs)

    def embed_modalities(self, **inputs) -> dict[str, torch.Tensor]:
        return self.multimodal.embed_modalities(**inputs)


@dataclass
class CellClassificationOutput:
    """Outputs of :class:`MultimodalForCellClassification`: ``loss`` (None without labels),
    ``logits`` (B, n_labels), ``cell_embedding`` (B, D) (joint)."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    cell_embedding: torch.Tensor


class MultimodalForCellClassification(_MultimodalLoading, nn.Module):
    """Cell-type classification on the joint embedding (the thesis' fine-tuning task): an
    MLP head, cross-entropy; works on RNA-only, ATAC-only or paired cells.

    Examples
    --------
    >>> cfg = MultimodalConfig(n_genes=50, hidden_size=32, num_layers=2, num_heads=4,
    ...                        intermediate_size=64, label_names=["B", "T"])
    >>> model = MultimodalForCellClassification(cfg)
    >>> ids, values = torch.tensor([[3, 7, 9]]), torch.tensor([[1, 5, 2]])
    >>> model(atac_ids=ids, atac_values=values, labels=torch.tensor([1])).logits.shape
    torch.Size([1, 2])
    """

    def __init__(self, config: MultimodalConfig, vocab=None):
        super().__init__()
        c = self.config = config
        self.vocab = None
        if len(c.label_names) < 2:
            raise ValueError(f"a classification head needs at least 2 labels, got {c.label_names}")
        d = c.hidden_size
        self.multimodal = MultimodalModel(config)
        self.classifier = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(c.dropout),
                                        nn.Linear(d, len(c.label_names)))
        self.classifier.apply(lambda mod: init_weights(mod, c.initializer_range))

    @classmethod
    def from_backbone(cls, model, label_names: list[str]) -> "MultimodalForCellClassification":
        """A classifier whose backbone starts from a trained model's (any multimodal class;
        its config, with ``label_names``), head newly initialised."""
        backbone = model if isinstance(model, MultimodalModel) else model.multimodal
        out = cls(backbone.config.replace(label_names=list(label_names)))
        out.multimodal.load_state_dict(backbone.state_dict())
        return out

    def forward(self, rna_ids=None, rna_values=None, rna_mask=None, atac_ids=None, atac_values=None,
                atac_mask=None, labels: torch.Tensor | None = None, rna_targets=None, atac_targets=None,
                rna_profile=None, atac_profile=None) -> CellClassificationOutput:
        """Logits of the joint embedding; ``labels`` (B,) class codes (-100 = unknown).
        The pretraining targets (``*_targets``, ``*_profile``) are accepted and ignored, so a
        masked batch also trains the classifier (on its partly masked values)."""
        z = self.multimodal.embed(rna_ids=rna_ids, rna_values=rna_values, rna_mask=rna_mask,
                                  atac_ids=atac_ids, atac_values=atac_values, atac_mask=atac_mask)
        logits = self.classifier(z)  # (B, K)
        loss = None
        if labels is not None:
            loss = (logits.sum() * 0.0 if bool((labels == -100).all())
                    else F.cross_entropy(logits.float(), labels, ignore_index=-100))
        return CellClassificationOutput(loss=loss, logits=logits, cell_embedding=z)

    def predict_proba(self, **inputs) -> torch.Tensor:
        """(B, n_labels) class probabilities, columns in ``config.label_names`` order."""
        return self.forward(**inputs).logits.float().softmax(-1)

    def embed(self, **inputs) -> torch.Tensor:
        return self.multimodal.embed(**inputs)


__all__ = ["CellClassificationOutput", "MultimodalEmbeddings", "MultimodalForCellClassification",
           "MultimodalForMaskedValues", "MultimodalModel", "MultimodalOutput", "joint_embedding"]
