"""Transformer building blocks shared by the models.

Attention is :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA), so on a GPU
torch picks the flash or memory-efficient kernel. A padding mask is passed only when the
batch has padding: flash attention takes no mask, so an unpadded (packed or bucketed)
batch keeps the fastest kernel.

The block's parameter names follow :class:`torch.nn.TransformerEncoderLayer`
(``linear1``, ``linear2``, ``norm1``, ``norm2``, ``self_attn.out_proj``) with the packed
``in_proj`` weight as ``self_attn.qkv``; with ``norm_first=False`` and ``activation="relu"``
the block computes what that layer computes, which is how published geniml Atacformer
checkpoints (built on ``nn.TransformerEncoder``) load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (``"gelu"`` or ``"relu"``)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA mask from a ``(B, L)`` keep-mask (True = real token): ``(B, 1, 1, L)`` bool, or
    ``None`` when nothing is padded (so that the flash kernel stays eligible)."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask.bool()
    if bool(attention_mask.all()):
        return None
    # a row with no real token would softmax over nothing (NaN); let it see position 0
    empty = ~attention_mask.any(dim=1, keepdim=True)  # (B, 1)
    first = torch.zeros_like(attention_mask)
    first[:, 0] = True
    attention_mask = attention_mask | (empty & first)
    return attention_mask[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention through SDPA; self-attention when ``memory`` is omitted.

    Parameters
    ----------
    hidden_size, num_heads
        Model width and number of heads (``hidden_size % num_heads == 0``).
    dropout
        Dropout on the attention weights (training only).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)  # rows: q, k, v (nn.MultiheadAttention layout)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, N, Dh)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, Lq, D) attends to ``memory`` (B, Lk, D) (default: ``x``); ``mask`` is
        an SDPA bool mask broadcastable to (B, H, Lq, Lk), True = attend."""
        d = x.shape[-1]
        if memory is None:
            q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, L, D)
        else:
            w_q, w_kv = self.qkv.weight.split([d, 2 * d], dim=0)
            b_q, b_kv = self.qkv.bias.split([d, 2 * d], dim=0)
            q = F.linear(x, w_q, b_q)  # (B, Lq, D)
            k, v = F.linear(memory, w_kv, b_kv).split(d, dim=-1)  # 2 x (B, Lk, D)
        y = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, Lq, Dh)
        y = y.transpose(1, 2).reshape(x.shape)  # (B, Lq, D)
        return self.out_proj(y)


class EncoderBlock(nn.Module):
    """One transformer encoder layer: SDPA self-attention and a feed-forward network.

    Pre-LayerNorm by default (``x + f(norm(x))``); ``norm_first=False`` gives the original
    post-LayerNorm layer (``norm(x + f(x))``).
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 dropout: float = 0.1, activation_fn: str = "gelu", norm_first: bool = True,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.linear1 = nn.Linear(hidden_size, intermediate_size)
        self.linear2 = nn.Linear(intermediate_size, hidden_size)
        self.activation = activation(activation_fn)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, L, D) -> (B, L, D); ``mask`` from :func:`key_padding_mask`."""
        if self.norm_first:
            x = x + self.dropout1(self.self_attn(self.norm1(x), mask))
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self.dropout1(self.self_attn(x, mask)))
        return self.norm2(x + self._ff(x))


class Encoder(nn.Module):
    """A stack of :class:`EncoderBlock`; pre-LN stacks end with a final LayerNorm."""

    def __init__(self, num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int,
                 dropout: float = 0.1, activation_fn: str = "gelu", norm_first: bool = True,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderBlock(hidden_size, num_heads, intermediate_size, dropout, activation_fn,
                         norm_first, layer_norm_eps)
            for _ in range(num_layers)
        )
        # a pre-LN stack ends with a LayerNorm; with no layer there is nothing to normalise
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if norm_first and num_layers else nn.Identity()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, L, D), ``attention_mask`` (B, L) bool (True = real token) -> (B, L, D)."""
        mask = key_padding_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block: queries attend to an encoder output, then a
    feed-forward network. Queries do not attend to each other."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 dropout: float = 0.1, activation_fn: str = "gelu", layer_norm_eps: float = 1e-5):
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.norm_kv = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ff = nn.Sequential(
            nn.Linear(hidden_size, intermediate_size), activation(activation_fn),
            nn.Dropout(dropout), nn.Linear(intermediate_size, hidden_size), nn.Dropout(dropout),
        )

    def forward(self, q: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``q`` (B, G, D) queries, ``memory`` (B, L, D) -> (B, G, D)."""
        q = q + self.cross_attn(self.norm_q(q), mask, memory=self.norm_kv(memory))
        return q + self.ff(self.norm_ff(q))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation (normal(0, std) weights, zero biases, unit LayerNorms;
    an embedding's padding row stays zero). Apply with ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def mean_pool(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, D) over positions where ``keep`` (B, L) is True -> (B, D)."""
    keep = keep.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
