"""Fine-tuning a pretrained Atacformer: cell-type metric learning, a label head, and batch
correction by gradient reversal; LoRA adapters through ``peft``.

All three objectives act on the pooled cell vector ``z`` (the cell embedding of
:meth:`AtacformerModel.embed`), so what they teach shows in ``atacformer embed``:

- ``"triplet"``: ``TripletMarginLoss(margin, p=2)`` on pooled cells, anchor and positive of one
  label, negative of another, mined in the batch (LeRoy 2025, ch. 5 and appendix B: the
  cell-type fine-tuned model); on unit-length cells when the model's embedding is
  L2-normalised (``config.l2_normalize``), so that the margin acts in the space the
  embedding is used in;
- ``"classify"``: a linear head on ``z`` trained with cross-entropy (any obs column: cell
  type, organ...); :meth:`AtacformerForFinetuning.predict_proba` gives its probabilities;
- ``"batch-adversarial"``: the whole-profile reconstruction of
  :class:`AtacformerForProfileReconstruction` (so that the profile is not forgotten) plus a
  batch classifier that sees ``z`` through a gradient-reversal layer (Ganin & Lempitsky
  2015): the classifier learns to tell batches apart, the encoder learns to make that
  impossible.

Each is a model whose forward returns a loss, trained by the package's one loop
(:func:`atacformer.train.pretrain` with ``objective=...`` and ``init_from=BASE``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atacformer.models._layers import init_weights
from atacformer.models.atacformer.configuration_atacformer import AtacformerConfig
from atacformer.models.atacformer.modeling_atacformer import (
    AtacformerForProfileReconstruction, AtacformerModel, _AtacformerLoading, profile_loss,
)


# -- gradient reversal ------------------------------------------------------------------------
class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-strength``."""
    return _ReverseGradient.apply(x, float(strength))


class GradientReversal(nn.Module):
    """:func:`reverse_gradient` as a module (``strength``: the reversal factor)."""

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.strength)


# -- triplet mining -----------------------------------------------------------------------------
def _pick(mask: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row of ``mask`` (B, B), the column of its ``floor(u * count)``-th True entry
    (0 for a row without one)."""
    count = mask.sum(1)
    k = torch.clamp((u * count).long(), max=(count - 1).clamp_min(0))
    hit = (mask.cumsum(1) == (k + 1)[:, None]) & mask
    return hit.float().argmax(1)


def mine_triplets(z: torch.Tensor, labels: torch.Tensor, mining: str = "batch-hard", margin: float = 1.0,
                  draws: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor, positive and negative indices into the batch.

    Every cell with a label (``>= 0``), another cell of its label and a cell of another label
    is an anchor. ``"batch-hard"``: its farthest positive and nearest negative (Hermans 2017);
    ``"semi-hard"``: a random positive and the nearest negative farther than that positive
    (within the margin when one is; else the nearest negative; Schroff 2015); ``"random"``:
    a random positive and negative. ``draws`` (B, 2) uniform numbers make the random picks.
    """
    n = len(z)
    with torch.no_grad():
        d = torch.cdist(z.detach().float(), z.detach().float())  # (B, B)
        valid = labels >= 0
        both = valid[:, None] & valid[None, :]
        same = labels[:, None] == labels[None, :]
        pos = same & both & ~torch.eye(n, dtype=torch.bool, device=z.device)
        neg = ~same & both
        anchors = torch.nonzero(pos.any(1) & neg.any(1)).squeeze(1)
        inf = torch.finfo(d.dtype).max
        nearest_neg = d.masked_fill(~neg, inf).argmin(1)
        if mining == "batch-hard":
            p = d.masked_fill(~pos, -1.0).argmax(1)
            q = nearest_neg
        else:
            if draws is None:
                draws = torch.rand(n, 2, device=z.device)
            p = _pick(pos, draws[:, 0])
            if mining == "random":
                q = _pick(neg, draws[:, 1])
            elif mining == "semi-hard":
                d_ap = d.gather(1, p[:, None])
                semi = neg & (d > d_ap) & (d < d_ap + margin)
                q = torch.where(semi.any(1), d.masked_fill(~semi, inf).argmin(1), nearest_neg)
            else:
                raise ValueError(f"triplet mining must be 'batch-hard', 'semi-hard' or 'random', got {mining!r}")
    return anchors, p[anchors], q[anchors]


# -- LoRA ----------------------------------------------------------------------------------------
def default_lora_targets(config: AtacformerConfig) -> list[str]:
    """The backbone's attention and feed-forward projections, or the token table of an encoder
    without layers."""
    if config.num_layers:
        return ["qkv", "out_proj", "linear1", "linear2"]
    return ["token_embeddings"]


def add_lora(backbone: nn.Module, lora: dict) -> None:
    """Inject LoRA adapters (``peft``) into ``backbone`` in place: ``lora`` holds ``rank``,
    ``alpha``, ``dropout`` and ``targets`` (module names)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - peft is a dependency
        raise ImportError("LoRA fine-tuning needs peft (pip install peft)") from e
    cfg = LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                     target_modules=list(lora["targets"]))
    inject_adapter_in_model(cfg, backbone)


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every LoRA-wrapped layer."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


# -- the model -----------------------------------------------------------------------------------
@dataclass
class FinetuningOutput:
    """``loss`` (scalar or None), ``logits`` (B, n_labels) of the label head or None,
    ``cell`` (B, D) pooled vectors, and the parts of the loss (floats) in ``parts``."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    cell: torch.Tensor
    parts: dict


class AtacformerForFinetuning(_AtacformerLoading, nn.Module):
    """An Atacformer backbone fine-tuned with ``config.finetune_objective`` (see the module notes).

    Examples
    --------
    >>> from atacformer import Vocabulary
    >>> v = Vocabulary(["chr1"] * 100, range(0, 10000, 100), range(100, 10100, 100))
    >>> cfg = AtacformerConfig.for_vocab(v, hidden_size=16, num_layers=0, finetune_objective="classify",
    ...                                  label_names=["B", "T"])
    >>> model = AtacformerForFinetuning(cfg, vocab=v)
    >>> out = model(torch.tensor([[1, 5, 9], [2, 3, 4]]), labels=torch.tensor([0, 1]))
    >>> out.logits.shape, out.loss.ndim
    (torch.Size([2, 2]), 0)
    """

    def __init__(self, config: AtacformerConfig, vocab=None):
        super().__init__()
        obj = config.finetune_objective
        if obj is None:
            raise ValueError("AtacformerForFinetuning needs config.finetune_objective "
                             "('triplet', 'classify' or 'batch-adversarial')")
        self.config = config
        self.vocab = vocab
        self.atacformer = AtacformerModel(config, vocab=None)
        d = config.hidden_size
        self.classifier = self.decoder = self.batch_classifier = None
        if obj == "classify":
            if len(config.label_names or []) < 2:
                raise ValueError(f"a classification head needs at least 2 labels, got {config.label_names}")
            self.classifier = nn.Linear(d, len(config.label_names))
            # per-label loss weights (set from the training cells; ones = plain cross-entropy)
            self.register_buffer("label_weights", torch.ones(len(config.label_names)))
        if obj == "batch-adversarial":
            if len(config.batch_names or []) < 2:
                raise ValueError(f"batch-adversarial fine-tuning needs at least 2 batches, got {config.batch_names}")
            # the profile decoder of AtacformerForProfileReconstruction (same weight names)
            self.decoder = None if config.tie_decoder else nn.Linear(d, config.n_regions, bias=False)
            self.decoder_bias = nn.Parameter(torch.zeros(config.n_regions))
            self.register_buffer("log_depth_center", torch.zeros(()))
            self.batch_classifier = nn.Sequential(GradientReversal(config.reversal_strength), nn.Linear(d, d),
                                                  nn.ReLU(), nn.Linear(d, len(config.batch_names)))
        for head in (self.classifier, self.decoder, self.batch_classifier):
            if head is not None:
                head.apply(lambda m: init_weights(m, config.initializer_range))
        if config.lora:
            add_lora(self.atacformer, config.lora)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, batch_labels: torch.Tensor | None = None,
                target_ids: torch.Tensor | None = None, draws: torch.Tensor | None = None) -> FinetuningOutput:
        """``labels`` (B,) label codes (-100: unknown); ``batch_labels`` (B,) batch codes;
        ``target_ids`` (B, T) every open region of each cell (batch-adversarial); ``draws``
        (B, 2) uniform numbers for random triplet picks."""
        c = self.config
        z = self.atacformer.embed(input_ids, attention_mask)  # (B, D)
        logits, loss, parts = None, None, {}
        if self.classifier is not None:
            logits = self.classifier(z)
            if labels is not None:
                known = labels >= 0
                loss = (F.cross_entropy(logits[known].float(), labels[known], weight=self.label_weights)
                        if known.any() else logits.sum() * 0.0)
                parts["classify"] = float(loss.detach())
        elif c.finetune_objective == "triplet" and labels is not None:
            # in the space the embedding is used in: unit length when the model says so
            e = F.normalize(z.float(), dim=-1) if c.l2_normalize else z.float()
            a, p, q = mine_triplets(e, labels, c.triplet_mining, c.triplet_margin, draws)
            loss = (F.triplet_margin_loss(e[a], e[p], e[q], margin=c.triplet_margin, p=2) if len(a)
                    else z.sum() * 0.0)
            parts["triplet"] = float(loss.detach())
            parts["triplets"] = int(len(a))
        elif c.finetune_objective == "batch-adversarial" and target_ids is not None:
            w = self.atacformer.embeddings.token_embeddings.weight[: c.n_regions] if c.tie_decoder \
                else self.decoder.weight
            _, profile = profile_loss(F.linear(z, w, self.decoder_bias), target_ids, c.depth_offset,
                                      self.log_depth_center)
            loss, parts["profile"] = profile, float(profile.detach())
            if batch_labels is not None:
                adv = F.cross_entropy(self.batch_classifier(z).float(), batch_labels, ignore_index=-100)
                loss = loss + c.adversarial_weight * adv
                parts["batch"] = float(adv.detach())
        return FinetuningOutput(loss=loss, logits=logits, cell=z, parts=parts)

    def embed(self, input_ids, attention_mask=None, pooling=None) -> torch.Tensor:
        """Cell embeddings (B, D), as :meth:`AtacformerModel.embed`."""
        return self.atacformer.embed(input_ids, attention_mask, pooling)

    def predict_proba(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_labels) probabilities of the label head (``"classify"`` models)."""
        if self.classifier is None:
            raise ValueError(f"this model was fine-tuned with {self.config.finetune_objective!r}; only "
                             "'classify' models have a label head (annotate with a labelled reference instead)")
        return torch.softmax(self.classifier(self.atacformer.embed(input_ids, attention_mask)).float(), -1)

    #: batch-adversarial: the profile decoder's data-derived bias, as in profile reconstruction
    init_decoder_bias = AtacformerForProfileReconstruction.init_decoder_bias

    def merge_adapters(self) -> "AtacformerForFinetuning":
        """Fold the LoRA adapters into the backbone's weights (in place); the model then has
        plain layers and ``config.lora`` is None. Returns ``self``."""
        for name, module in lora_layers(self):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent_name) if parent_name else self, child, module.get_base_layer())
        self.config = self.config.replace(lora=None)
        return self
