"""TOSICA's default learning rate, chosen on a validation split of reference cells only.

The NeurIPS BMMC cells are split as in ``bench_tosica.py`` (70 % reference, seed 0); the
held-out 30 % are never read here. The reference is split again (70 / 30, seed 1; types with
fewer than 2 reference cells left out) and TOSICA (Reactome, 20 epochs) trained on the first
part at each learning rate is scored on the second by macro-F1 and accuracy.

Measured (2 CPU cores shared with other work): lr 3e-3 macro-F1 0.287 (accuracy 0.581),
lr 1e-3 0.226 (0.533).

Usage::

    python benchmarks/bench_tosica_lr.py [--lrs 3e-3,1e-3] [--data-dir ../shared/data]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from _common import parse, parser


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--lrs", default="3e-3,1e-3")
    p.add_argument("--epochs", type=float, default=20.0)
    args, data = parse(p, argv)
    if data is None:
        return 2
    import anndata as ad
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    from atacformer import tools as tl
    from atacformer.tools._tosica import log_expression

    torch.set_num_threads(1)
    a = ad.read_h5ad(data / "neurips2021_bmmc_multiome_500" / "bmmc_multiome_500_rna.h5ad")
    a.X = log_expression(a)
    y = a.obs["cell_type"].astype(str).to_numpy()
    ref, _ = train_test_split(np.arange(a.n_obs), test_size=0.3, stratify=y, random_state=0)
    yr = y[ref]
    ok = np.isin(yr, [c for c in set(yr) if (yr == c).sum() >= 2])
    fit, val = train_test_split(ref[ok], test_size=0.3, stratify=yr[ok], random_state=1)
    gmt = data / "gene_sets_gmt_human" / "reactome_TOSICA.gmt"
    for lr in (float(v) for v in args.lrs.split(",")):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            model = tl.tosica_train(a[fit].copy(), gmt, "cell_type", Path(d) / "run", normalize=False, lr=lr,
                                    epochs=args.epochs, tensorboard=False)
            q = a[val].copy()
            tl.tosica_predict(q, model, threshold=0.0, normalize=False)
            pred = q.obs["predicted_label"].astype(str)
            print(f"lr {lr:g}: validation macro-F1 {f1_score(y[val], pred, average='macro'):.3f}, accuracy "
                  f"{accuracy_score(y[val], pred):.3f} ({time.perf_counter() - t:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
