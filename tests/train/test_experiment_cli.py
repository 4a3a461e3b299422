"""``atacformer experiment`` plans and the ``pretrain`` / ``experiment`` command lines."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atacformer.train.experiment import load_plan, run_config, run_experiment

PLAN = """
[experiment]
name = "toy"
out = "out"

[defaults]
model = "masked-bin"
data = ["{data}"]
max_steps = 4
batch_size = 8
max_length = 48

[defaults.model_overrides]
hidden_size = 16
intermediate_size = 32
num_heads = 2
embedding_dim = 8
decoder_dim = 8
decoder_hidden_size = 8

[[evaluate]]
name = "toy"
path = "{data}"
label_key = "cell_type"

[[stage]]
name = "s1"
switches = {{ mask_ratio = 0.0 }}

[[stage.run]]
name = "baseline"

[[stage.run]]
name = "dna"
switches = {{ dna_embeddings = "missing_table.npy" }}

[[stage]]
name = "s2"
grid = {{ decoder = ["mlp", "cross_attention"] }}
"""


@pytest.fixture
def plan_file(tmp_path, toy_h5ad):
    p = tmp_path / "plan.toml"
    p.write_text(PLAN.format(data=toy_h5ad))
    return p


def test_load_plan_merges_stage_switches_and_grids(plan_file, tmp_path):
    plan = load_plan(plan_file)
    assert [(r["stage"], r["name"]) for r in plan["runs"]] == [
        ("s1", "baseline"), ("s1", "dna"), ("s2", "decoder=mlp"), ("s2", "decoder=cross_attention")]
    assert plan["runs"][1]["switches"] == {"mask_ratio": 0.0, "dna_embeddings": str(tmp_path / "missing_table.npy")}
    assert plan["out"] == str(tmp_path / "out")
    cfg = run_config(plan["defaults"], {"mask_ratio": 0.15, "decoder": "cross_attention"}, tmp_path / "r")
    assert cfg.mask_ratio == 0.15 and cfg.model_overrides["decoder"] == "cross_attention"
    assert cfg.model_overrides["hidden_size"] == 16


def test_experiment_runs_skips_and_reuses(plan_file, tmp_path):
    table = run_experiment(plan_file)
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert table.split("|")[1].strip() == "stage" and (tmp_path / "out" / "results.md").exists()
    assert df["run"].tolist() == ["baseline", "dna", "decoder=mlp", "decoder=cross_attention",
                                  "LSI (atacformer.tl.lsi)"]
    status = dict(zip(df["run"], df["status"]))
    assert status["dna"].startswith("skipped: no DNA embedding table")
    done = df[df["status"] == "done"]
    assert len(done) == 4 and done["ARI toy"].notna().all()
    assert (done["steps"].dropna() == 4).all()
    model = tmp_path / "out" / "runs" / "s1-baseline" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    run_experiment(plan_file, only=["baseline"])
    assert model.stat().st_mtime_ns == before  # finished runs are reused, not retrained


def test_pretrain_on_an_h5ad_just_works_then_embed(cli, toy_h5ad, tmp_path):
    out = tmp_path / "run"
    proc = cli(["pretrain", "--data", str(toy_h5ad), "--out", str(out), "--max-steps", "3", "--no-progress"])
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 3 and summary["cells"] == 48
    assert (out / "corpus" / "manifest.json").exists()
    cli(["embed", str(out / "model"), str(toy_h5ad), "-o", str(tmp_path / "emb.h5ad")])
    emb = ad.read_h5ad(tmp_path / "emb.h5ad").obsm["X_atacformer"]
    assert emb.shape[0] == 48 and np.isfinite(emb).all()


def test_help_lists_the_commands(cli):
    out = cli(["--help"]).stdout
    assert "pretrain" in out and "experiment" in out
    assert "--parallel" in cli(["pretrain", "--help"]).stdout
    assert "PLAN.toml" in cli(["experiment", "--help"]).stdout
