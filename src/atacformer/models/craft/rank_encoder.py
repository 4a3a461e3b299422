"""The RNA side of CRAFT: a Geneformer-style rank encoder (Theodoris 2023).

A cell is the list of its expressed genes, ranked by expression normalised twice: by the
cell's total counts (scaled to 10,000) and by the gene's non-zero median over the training
corpus, so that a gene ranks high where it is expressed above its usual level. The top
``max_genes`` (2,048) ranked gene tokens go through a BERT encoder (learned positions,
post-LayerNorm blocks); the cell vector is the mean of the gene tokens' final states.

The encoder is the package's :class:`~atacformer.models._layers.Encoder`; a local BERT
checkpoint (Geneformer, or any ``BertForMaskedLM`` / ``BertModel`` folder) loads into it by
:func:`convert_bert_state_dict`, so no other framework is needed at run time.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from atacformer.models._layers import Encoder, init_weights, mean_pool

logger = logging.getLogger(__name__)

#: Special tokens of a freshly built gene vocabulary (Geneformer's layout, with a ``<cls>``).
RNA_SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>")
#: Cells' total counts are scaled to this before ranking (Geneformer's ``target_sum``).
TARGET_SUM = 10_000.0


# -- rank encoding (numpy) -------------------------------------------------------------------
def scale_by_depth(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Each row scaled to ``target_sum`` total (rows without counts stay zero); float64."""
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    total = np.asarray(X.sum(1)).ravel()
    X.data *= np.repeat(target_sum / np.where(total > 0, total, 1.0), np.diff(X.indptr))
    return X


def gene_nonzero_medians(X) -> np.ndarray:
    """Per gene, the median of its non-zero depth-normalised values over the cells of ``X``
    (cells x genes counts); 1 for a gene never expressed (it then never ranks by accident,
    having no non-zero value).

    Examples
    --------
    >>> X = sp.csr_matrix(np.array([[1, 0], [3, 2], [0, 0]]))
    >>> gene_nonzero_medians(X).round(1).tolist()
    [8000.0, 4000.0]
    """
    C = scale_by_depth(X).tocsc()
    C.eliminate_zeros()
    med = np.ones(C.shape[1], dtype=np.float64)
    for j in range(C.shape[1]):
        col = C.data[C.indptr[j]: C.indptr[j + 1]]
        if len(col):
            med[j] = np.median(col)
    return med


def rank_genes(X, medians: np.ndarray, gene_tokens: np.ndarray, max_genes: int = 2048,
               cls_token_id: int | None = None) -> list[np.ndarray]:
    """Each cell's gene tokens, most over-expressed first (Geneformer's rank encoding).

    Parameters
    ----------
    X
        (cells, genes) counts, CSR.
    medians
        (genes,) non-zero medians from :func:`gene_nonzero_medians` over the training cells.
    gene_tokens
        (genes,) token id of each gene.
    max_genes
        Genes kept per cell (the top ranks).
    cls_token_id
        Put this token first when given.

    Returns
    -------
    list of numpy.ndarray
        One int64 array per cell; ties rank by gene order (column index).

    Examples
    --------
    >>> X = sp.csr_matrix(np.array([[1, 5, 0], [2, 2, 4]]))
    >>> [t.tolist() for t in rank_genes(X, np.ones(3), np.array([10, 11, 12]))]
    [[11, 10], [12, 10, 11]]
    """
    S = scale_by_depth(X)
    S.data /= np.asarray(medians, dtype=np.float64)[S.indices]
    gene_tokens = np.asarray(gene_tokens, dtype=np.int64)
    out = []
    for i in range(S.shape[0]):
        a, b = S.indptr[i], S.indptr[i + 1]
        idx, val = S.indices[a:b], S.data[a:b]
        keep = val > 0
        idx, val = idx[keep], val[keep]
        order = np.lexsort((idx, -val))[:max_genes]
        toks = gene_tokens[idx[order]]
        out.append(np.concatenate([[cls_token_id], toks]).astype(np.int64) if cls_token_id is not None
                   else toks.astype(np.int64))
    return out


def log_normalise(X, target_sum: float = TARGET_SUM) -> np.ndarray:
    """Dense ``log1p(counts / total * target_sum)`` (float32): what CRAFT's decoder predicts."""
    S = scale_by_depth(X, target_sum)
    S.data = np.log1p(S.data)
    return S.toarray().astype(np.float32)


# -- the encoder (torch) ---------------------------------------------------------------------
class RankEncoder(nn.Module):
    """BERT over ranked gene tokens.

    Parameters
    ----------
    vocab_size, hidden_size, num_layers, num_heads, intermediate_size
        Gene vocabulary (specials included) and encoder shape.
    max_positions
        Position table size (at least ``max_genes`` + 1 with a ``<cls>``).
    activation
        ``"relu"`` (Geneformer) or ``"gelu"`` (BERT).
    dropout, layer_norm_eps
        As in BERT (eps 1e-12).
    pad_token_id, cls_token_id
        Special token ids (``cls_token_id`` None: cells carry no ``<cls>``).
    initializer_range
        Std of the initial weights.

    Examples
    --------
    >>> enc = RankEncoder(vocab_size=20, hidden_size=16, num_layers=1, num_heads=2,
    ...                   intermediate_size=32, max_positions=8)
    >>> ids = torch.tensor([[2, 5, 7, 0], [2, 9, 0, 0]])
    >>> enc.embed(ids, ids != 0).shape
    torch.Size([2, 16])
    """

    def __init__(self, vocab_size: int, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                 intermediate_size: int = 256, max_positions: int = 2049, activation: str = "relu",
                 dropout: float = 0.0, layer_norm_eps: float = 1e-12, pad_token_id: int = 0,
                 cls_token_id: int | None = 2, initializer_range: float = 0.02):
        super().__init__()
        self.pad_token_id, self.cls_token_id = pad_token_id, cls_token_id
        self.word = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.encoder = Encoder(num_layers, hidden_size, num_heads, intermediate_size, dropout, activation,
                               norm_first=False, layer_norm_eps=layer_norm_eps)
        self.apply(lambda m: init_weights(m, initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids`` (B, L), ``attention_mask`` (B, L) bool -> hidden states (B, L, D)."""
        n = input_ids.shape[1]
        if n > self.position.num_embeddings:
            raise ValueError(f"{n} gene tokens exceed the position table ({self.position.num_embeddings})")
        x = self.word(input_ids) + self.position(torch.arange(n, device=input_ids.device))[None]  # (B, L, D)
        return self.encoder(self.dropout(self.norm(x)), attention_mask)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Cell vectors (B, D): the mean of the gene tokens' final states (``<cls>`` and
        padding left out), as Geneformer's cell embeddings."""
        keep = attention_mask.bool()
        if self.cls_token_id is not None:
            keep = keep & (input_ids != self.cls_token_id)
        return mean_pool(self(input_ids, attention_mask), keep)


# -- local BERT / Geneformer checkpoints ------------------------------------------------------
def _read_bert_weights(d: Path) -> dict[str, torch.Tensor]:
    if (d / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(d / "model.safetensors")
    if (d / "pytorch_model.bin").exists():
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{d}: no model.safetensors or pytorch_model.bin (a BERT checkpoint folder)")


def convert_bert_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """A ``BertModel`` / ``BertForMaskedLM`` state dict as :class:`RankEncoder` weights.

    Query, key and value are packed into one projection; the token-type embedding of type 0
    (the only one a single-segment input uses) is folded into the position table, which
    leaves every output the same. The pooler and the masked-LM head are dropped.
    """
    p = "bert." if any(k.startswith("bert.") for k in state) else ""
    g = lambda k: state[p + k]  # noqa: E731
    out = {
        "word.weight": g("embeddings.word_embeddings.weight"),
        "position.weight": g("embeddings.position_embeddings.weight")
        + g("embeddings.token_type_embeddings.weight")[0][None],
        "norm.weight": g("embeddings.LayerNorm.weight"), "norm.bias": g("embeddings.LayerNorm.bias"),
    }
    for i in range(num_layers):
        s, t = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[t + f"self_attn.qkv.{kind}"] = torch.cat(
                [g(s + f"attention.self.{n}.{kind}") for n in ("query", "key", "value")])
            out[t + f"self_attn.out_proj.{kind}"] = g(s + f"attention.output.dense.{kind}")
            out[t + f"norm1.{kind}"] = g(s + f"attention.output.LayerNorm.{kind}")
            out[t + f"linear1.{kind}"] = g(s + f"intermediate.dense.{kind}")
            out[t + f"linear2.{kind}"] = g(s + f"output.dense.{kind}")
            out[t + f"norm2.{kind}"] = g(s + f"output.LayerNorm.{kind}")
    return out


def _read_mapping(d: Path, stem: str) -> dict | None:
    """``{stem}.json`` or Geneformer's ``{stem}.pkl`` (a plain dict) from a checkpoint folder."""
    for f in sorted(d.glob(f"*{stem}*")):
        if f.suffix == ".json":
            return json.loads(f.read_text())
        if f.suffix == ".pkl":
            with open(f, "rb") as fh:
                obj = pickle.load(fh)  # a local file the user chose, as Geneformer ships it
            if not isinstance(obj, dict):
                raise ValueError(f"{f}: expected a dict, got {type(obj).__name__}")
            return obj
    return None


def load_token_dictionary(path) -> dict:
    """The token dictionary of a BERT / Geneformer checkpoint folder (gene id or name -> token
    id), read without its weights."""
    d = Path(path)
    tokens = _read_mapping(d, "token_dictionary")
    if tokens is None:
        raise FileNotFoundError(f"{d}: no token dictionary (token_dictionary.json or Geneformer's "
                                "token_dictionary.pkl) mapping genes to token ids")
    return tokens


def load_bert_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor], dict, dict | None]:
    """Read a local BERT checkpoint folder for the RNA encoder.

    The folder holds ``config.json`` (a BERT config: ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``intermediate_size``, ``hidden_act``, ``max_position_embeddings``,
    ``layer_norm_eps``, ``pad_token_id``), ``model.safetensors`` or ``pytorch_model.bin``, a
    token dictionary (``*token_dictionary*.json`` / ``.pkl``: gene id or name -> token id, with
    ``<pad>`` and optionally ``<cls>``) and optionally Geneformer's gene medians
    (``*gene_median*.json`` / ``.pkl``).

    Returns
    -------
    encoder_kwargs, state, token_dictionary, medians
        :class:`RankEncoder` arguments, its converted weights, the token dictionary and the
        medians (None when the folder has none).
    """
    d = Path(path)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d}: no config.json (a BERT / Geneformer checkpoint folder)")
    c = json.loads((d / "config.json").read_text())
    if c.get("model_type") not in (None, "bert"):
        raise ValueError(f"{d}/config.json: model_type {c.get('model_type')!r}; the RNA encoder loads BERT "
                         "checkpoints (Geneformer's are BERT)")
    tokens = load_token_dictionary(d)
    act = c.get("hidden_act", "gelu")
    if act not in ("gelu", "relu"):
        raise ValueError(f"{d}/config.json: hidden_act {act!r}; supported: 'gelu', 'relu'")
    kw = dict(vocab_size=int(c["vocab_size"]), hidden_size=int(c["hidden_size"]),
              num_layers=int(c["num_hidden_layers"]), num_heads=int(c["num_attention_heads"]),
              intermediate_size=int(c["intermediate_size"]), max_positions=int(c["max_position_embeddings"]),
              activation=act, dropout=0.0, layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)),
              pad_token_id=int(tokens.get("<pad>", c.get("pad_token_id", 0))),
              cls_token_id=int(tokens["<cls>"]) if "<cls>" in tokens else None)
    state = convert_bert_state_dict(_read_bert_weights(d), kw["num_layers"])
    return kw, state, tokens, _read_mapping(d, "gene_median")
