"""One training loop, one embedding, and the run's own starting point.

- no optimizer step is taken outside ``atacformer.train`` (the benchmark, the demo and
  experiments train through :func:`pretrain`);
- ``atacformer embed``, ``tl.embed`` and the benchmark give the same embedding for one model
  and one input;
- ``max_steps=0`` exports the initialised model unchanged;
- the default (``cpu``) preset sizes its steps from the data and a time budget;
- a non-finite loss stops the run and exports nothing;
- a run never writes into a folder that holds something else.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from atacformer import tools as tl
from atacformer.models import load_model
from atacformer.train import NonFiniteLossError, TrainConfig, pretrain
from atacformer.train.build import build_model, model_inputs
from atacformer.train.config import RECIPES
from atacformer.train.data import prepare_corpora

SRC = Path(__file__).resolve().parents[2] / "src" / "atacformer"
TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}


def _cfg(out, **kw):
    base = dict(out=str(out), max_steps=4, batch_size=8, save_every=2, progress=False, max_length=48,
                warmup_steps=1, tensorboard=False, model_overrides=dict(TINY))
    return TrainConfig(**{**base, **kw})


def test_no_backward_or_optimizer_step_outside_train():
    offenders = []
    for path in SRC.rglob("*.py"):
        if "train" in path.relative_to(SRC).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("backward", "step") and isinstance(
                    node.value, (ast.Name, ast.Attribute, ast.Call)):
                name = ast.unparse(node)
                if name.endswith(".backward") or name in ("opt.step", "optimizer.step", "self.optimizer.step"):
                    offenders.append(f"{path.relative_to(SRC)}: {name}")
    assert not offenders, offenders


def test_library_never_imports_the_cli():
    for path in SRC.rglob("*.py"):
        if path.name == "cli.py" or path.name == "__main__.py":
            continue
        text = path.read_text()
        assert "atacformer.cli" not in text and "from atacformer import cli" not in text, path


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_max_steps_zero_exports_the_initialised_model(toy_h5ad, tmp_path, recipe):
    cfg = _cfg(tmp_path / "run", data=[str(toy_h5ad)], recipe=recipe, max_steps=0)
    summary = pretrain(cfg)
    assert summary["steps"] == 0
    exported = load_model(tmp_path / "run" / "model").state_dict()
    resolved = TrainConfig.load(tmp_path / "run" / "train_config.json")
    cs = prepare_corpora(resolved.data, tmp_path / "run", build=False)
    fresh = build_model(resolved, model_inputs(resolved, cs), seed=resolved.seed).state_dict()
    assert set(fresh) == set(exported)
    for k in fresh:
        assert torch.equal(fresh[k], exported[k]), k


def test_recipe_switches_are_saved_with_run_and_model(toy_h5ad, tmp_path):
    pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], recipe="lsi-init-contrastive", max_steps=2))
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["recipe"] == "lsi-init-contrastive" and saved["lsi_init"] and saved["contrastive"] == 1.0
    assert saved["replacement"] == "frequency" and saved["embedding_lr_scale"] == 0.1
    model_cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert model_cfg["pooling"] == "idf" and model_cfg["remove_depth"] and model_cfg["l2_normalize"]
    assert model_cfg["contrastive_weight"] == 1.0
    m = load_model(tmp_path / "run" / "model")
    assert float(m.atacformer.token_idf[:240].min()) > 0  # the training cells' IDF travels with the model


def test_lsi_init_puts_lsi_loadings_in_the_token_table(toy_h5ad, tmp_path):
    """The initialised table (max_steps 0) holds the LSI region loadings of an independent
    TF-IDF + SVD (scikit-learn) up to sign and scale."""
    from sklearn.decomposition import TruncatedSVD

    from atacformer.preprocessing import tfidf_matrix

    pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], recipe="lsi-init-contrastive", max_steps=0))
    table = load_model(tmp_path / "run" / "model").atacformer.embeddings.token_embeddings.weight.detach().numpy()
    X = ad.read_h5ad(toy_h5ad).X
    m, _ = tfidf_matrix(X)
    svd = TruncatedSVD(4, algorithm="arpack", random_state=0).fit(m)
    ref = svd.components_[1]  # the first kept component (the depth one is dropped)
    got = table[:240, 0]
    assert abs(np.corrcoef(ref, got)[0, 1]) > 0.99


def test_three_entry_points_give_one_embedding(toy_h5ad, tmp_path, cli):
    """atacformer embed (CLI), tl.embed and the benchmark's embedding agree to 1e-6 for a model
    whose folder asks for IDF pooling, depth removal and unit length."""
    from atacformer.evaluation.harness import _atacformer, BenchmarkConfig

    pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], recipe="rtd-contrastive", max_steps=3))
    model = load_model(tmp_path / "run" / "model")
    cli(["embed", str(tmp_path / "run" / "model"), str(toy_h5ad), "-o", str(tmp_path / "emb.h5ad")])
    via_cli = ad.read_h5ad(tmp_path / "emb.h5ad").obsm["X_atacformer"]
    a = ad.read_h5ad(toy_h5ad)
    tl.embed(a, model)
    np.testing.assert_allclose(via_cli, a.obsm["X_atacformer"], rtol=0, atol=1e-6)
    assert a.uns["X_atacformer"]["pooling"] == "idf" and a.uns["X_atacformer"]["l2_normalize"]
    # the benchmark trains through pretrain and embeds through tl.embed: same model, same numbers
    b = ad.read_h5ad(toy_h5ad)
    cfg = BenchmarkConfig(recipes=["rtd-contrastive"], steps=3, time_budget=None)
    reps = _atacformer({"toy": (b, None)}, cfg, tmp_path / "bench", lambda m: None)
    key, _, bench_model = reps["toy"]["atacformer rtd-contrastive"]
    c = ad.read_h5ad(toy_h5ad)
    tl.embed(c, bench_model)
    np.testing.assert_allclose(b.obsm[key], c.obsm["X_atacformer"], rtol=0, atol=1e-6)


def test_default_preset_sizes_steps_from_data_and_time_budget(toy_h5ad, tmp_path):
    cfg = TrainConfig(data=[str(toy_h5ad)], out=str(tmp_path / "a"), progress=False, tensorboard=False,
                      model_overrides=dict(TINY), epochs=2.0, min_steps=1, batch_size=16)
    summary = pretrain(cfg)
    saved = TrainConfig.load(tmp_path / "a" / "train_config.json")
    assert saved.preset == "cpu" and saved.recipe == "profile"
    assert summary["steps"] == saved.max_steps == int(np.ceil(2.0 * 48 / 16))
    # a small set gets at least min_steps
    cfg = TrainConfig(data=[str(toy_h5ad)], out=str(tmp_path / "m"), progress=False, tensorboard=False,
                      model_overrides=dict(TINY), epochs=2.0, min_steps=9, batch_size=16)
    assert pretrain(cfg)["steps"] == 9
    # a budget too small for the plan: the plan is cut at what fits, and the cut is saved
    cfg = TrainConfig(data=[str(toy_h5ad)], out=str(tmp_path / "b"), progress=False, tensorboard=False,
                      model_overrides=dict(TINY), batch_size=4, epochs=400.0, time_budget=0.02)
    summary = pretrain(cfg)
    saved = TrainConfig.load(tmp_path / "b" / "train_config.json")
    assert 5 <= summary["steps"] == saved.max_steps < 400 * 48 / 4
    assert summary["elapsed_s"] < 30


def test_non_finite_loss_stops_and_exports_nothing(toy_h5ad, tmp_path, cli):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step"):
        pretrain(_cfg(out, data=[str(toy_h5ad)], recipe="rtd", lr=1e12, max_steps=30, save_every=1,
                      max_grad_norm=0.0))
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    proc = cli(["pretrain", "--data", str(toy_h5ad), "--out", str(tmp_path / "cli"), "--recipe", "rtd",
                "--lr", "1e12", "--max-grad-norm", "0", "--max-steps", "30", "--no-progress"], check=False)
    assert proc.returncode == 2 and "atacformer: error: step" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cli" / "model").exists()


def test_pretrain_refuses_a_folder_of_other_files_and_overwrites_only_when_asked(toy_h5ad, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("precious")
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(Exception, match="not a training run"):
        pretrain(_cfg(mine, data=[str(toy_h5ad)]))
    assert (mine / "metrics.csv").read_text() == "precious"
    pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], max_steps=0))
    with pytest.raises(Exception, match="--overwrite"):
        pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], max_steps=0))
    pretrain(_cfg(tmp_path / "run", data=[str(toy_h5ad)], max_steps=2, overwrite=True))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


def test_pretrain_takes_cells_in_memory(toy_h5ad, tmp_path):
    a = ad.read_h5ad(toy_h5ad)
    s1 = pretrain(_cfg(tmp_path / "mem", data=[], max_steps=3), data=a)
    s2 = pretrain(_cfg(tmp_path / "file", data=[str(toy_h5ad)], max_steps=3))
    assert s1["final_loss"] == pytest.approx(s2["final_loss"], abs=1e-6)
    # the in-memory corpus is reused when the cells are the same
    pretrain(_cfg(tmp_path / "mem", data=[], max_steps=3, overwrite=True), data=a)


def test_h5ad_with_chr_columns_and_repeated_raw_barcodes(data_dir, tmp_path):
    """An h5ad whose coordinates are chr/start/end columns, and whose obs['barcode'] repeats
    across libraries while obs_names are unique, trains and tokenizes into a corpus."""
    from atacformer.cli import main

    src = data_dir / "geniml_pbmc_hg38_tiny" / "pbmc_hg38.h5ad"
    a = ad.read_h5ad(src)
    a.obs["barcode"] = ["AAAC-1"] * a.n_obs  # one raw barcode, repeated
    a.obs_names = [f"lib{i}_AAAC-1" for i in range(a.n_obs)]
    path = tmp_path / "multi.h5ad"
    a.write_h5ad(path)
    summary = pretrain(_cfg(tmp_path / "run", data=[str(path)], max_steps=1, batch_size=4))
    assert summary["cells"] == a.n_obs
    assert main(["tokenize", str(path), "--genome", "hg38", "-o", str(tmp_path / "corpus")]) == 0
    from atacformer.corpus import Corpus

    obs = Corpus.open(tmp_path / "corpus").obs
    assert list(obs.index) == list(a.obs_names) and set(obs["raw_barcode"]) == {"AAAC-1"}


def test_a_corpus_build_left_by_an_interrupted_run_is_not_a_foreign_file(toy_h5ad, tmp_path):
    out = tmp_path / "run"
    (out / ".corpus.build-deadbeef").mkdir(parents=True)
    (out / ".corpus.build-deadbeef" / "manifest.json").write_text("{}")
    pretrain(_cfg(out, data=[str(toy_h5ad)], max_steps=1))
    assert not (out / ".corpus.build-deadbeef").exists() and (out / "model").exists()
