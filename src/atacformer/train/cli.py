"""``atacformer pretrain``, ``atacformer finetune`` and ``atacformer experiment``: the command-line face of
:mod:`atacformer.train`.

``python -m atacformer pretrain ...`` is the same command, for ``torchrun``::

    torchrun --nproc-per-node 8 -m atacformer pretrain --model masked-bin --data corpus/ \\
        --out run/ --preset base --parallel fsdp
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = json.loads(v)
    except json.JSONDecodeError:
        value = v  # a bare string such as cross_attention
    return k.strip(), value


def _add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain Atacformer or the masked-bin model (CPU, GPU, torchrun DDP/FSDP)",
        description="Pretrain a model on tokenized cells. INPUT: a corpus folder, fragments file or .h5ad "
        "peak matrix (several allowed; non-corpus inputs are tokenized once into OUT/corpus). Without "
        "--bins/--universe an .h5ad's own peaks are the vocabulary. OUT receives metrics.csv, resumable "
        "checkpoints/ and the exported model/ folder (for `atacformer embed`). Multi-GPU / multi-node: "
        "torchrun --nproc-per-node N -m atacformer pretrain ...")
    a = p.add_argument
    from atacformer.train.config import PRESETS, RECIPES

    a("--model", choices=["atacformer", "masked-bin"], default="atacformer",
      help="atacformer: region tokens -> encoder -> pooled cell (LeRoy 2025); masked-bin: per-group <eos> "
      "decoding of masked bins")
    a("--data", nargs="+", required=True, metavar="INPUT", help="corpus folders, fragments files, .h5ad")
    a("--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier run with "
      "--resume / --overwrite)")
    a("--preset", choices=list(PRESETS), default="cpu",
      help="model size and optimisation defaults; cpu (default): a small model whose steps are sized from "
      "the data and a time budget; debug / small / base: fixed step counts")
    a("--recipe", choices=list(RECIPES),
      help="named objective + quality switches (default: profile, the best measured); any flag below wins")
    a("--max-steps", type=int, help="optimizer steps (default: the preset's; 0 exports the initialised model)")
    a("--epochs", type=float, help="cpu preset: passes over the cells (default 20), before the time budget")
    a("--time-budget", type=float, metavar="MINUTES",
      help="cpu preset: stop the plan at what fits in this many minutes (default 12)")
    a("--save-every", type=int, help="checkpoint every N steps (default: the preset's)")
    a("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    a("--overwrite", action="store_true", help="replace an earlier run in OUT")
    a("--seed", type=int, default=0)
    g = p.add_argument_group("vocabulary (inputs that are not a corpus)")
    v = g.add_mutually_exclusive_group()
    v.add_argument("--bins", type=int, help="fixed genome bins of this size (bp)")
    v.add_argument("--universe", help="BED file of regions to use as the vocabulary")
    g.add_argument("--genome", help="hg38, hg19, mm10, mm39 or a .chrom.sizes file")
    g = p.add_argument_group("model")
    g.add_argument("--max-length", type=int, help="context: tokens per cell sentence")
    g.add_argument("--mask-ratio", type=float,
                   help="masked-bin: fraction of open bins removed; atacformer: replacement probability")
    g.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any model config field, e.g. --set dropout=0 --set decoder=cross_attention")
    g.add_argument("--init-from", metavar="MODEL_DIR",
                   help="continued pretraining: start from this model folder (its architecture, vocabulary, "
                   "weights and embedding settings; the data is tokenized into its vocabulary)")
    g.add_argument("--objective", choices=["profile", "rtd"],
                   help="atacformer: whole-profile reconstruction or replaced-token detection")
    g.add_argument("--replacement", choices=["uniform", "frequency"], help="rtd: replacement tokens")
    g.add_argument("--contrastive", type=float, help="rtd: weight of a two-view InfoNCE term (0 = off)")
    g.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature")
    g.add_argument("--lsi-init", action="store_true", default=None,
                   help="initialise the token table from LSI loadings of the training cells")
    g.add_argument("--lsi-components", type=int, help="LSI components in the token table")
    g.add_argument("--lsi-offset", type=float, help="constant of the token dims past the LSI loadings")
    g.add_argument("--embedding-lr-scale", type=float, help="learning-rate multiplier of the token table")
    g.add_argument("--pooling", choices=["mean", "idf", "cls"], help="cell embedding pooling (saved with "
                   "the model)")
    g.add_argument("--remove-depth", action=argparse.BooleanOptionalAction, default=None,
                   help="drop the embedding direction that follows depth (saved with the model)")
    g.add_argument("--l2-normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale cell embeddings to unit length (saved with the model)")
    g.add_argument("--group-by", choices=["chromosome", "class"], default="chromosome",
                   help="masked-bin <eos> per chromosome or per region class (needs --tss/--genes)")
    g.add_argument("--tss", help="TSS BED for region classes")
    g.add_argument("--genes", help="genes BED for region classes")
    g.add_argument("--dna-embeddings", help=".npy per-bin DNA embedding table (masked-bin)")
    g.add_argument("--supervised", action="store_true", help="masked-bin: cell-type / organ heads on <cls>")
    g.add_argument("--label-key", default="cell_type", help="obs column of cell types (default cell_type)")
    g.add_argument("--organ-key", default="organ", help="obs column of organs (default organ)")
    g = p.add_argument_group("data pipeline")
    g.add_argument("--context", choices=["random", "first"], default="random",
                   help="longer cells: random subset (default) or first C tokens")
    g.add_argument("--order", choices=["genomic", "shuffled"], default="genomic")
    g.add_argument("--batching", choices=["bucket", "padded"], default="bucket",
                   help="bucket: length-sorted batches, little padding (default); padded: baseline")
    g.add_argument("--bucket-window", type=int, default=64, help="batches pooled for length sorting")
    g.add_argument("--block-size", type=int, default=1, help="shuffle blocks of consecutive cells")
    g.add_argument("--num-workers", type=int, default=0, help="data-loader processes per rank")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help="cells per optimizer step over all ranks")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step and rank")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor, fraction of --lr")
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.98)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    g = p.add_argument_group("systems")
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    g.add_argument("--activation-checkpointing", action="store_true")
    g.add_argument("--parallel", choices=["ddp", "fsdp"], default="ddp", help="under torchrun")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--log-every", type=int, default=1)
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(func=cmd_pretrain)


def config_from_args(args):
    """A :class:`TrainConfig` from parsed ``pretrain`` arguments."""
    from atacformer.train.config import TrainConfig

    return TrainConfig(
        model=args.model, data=args.data, out=args.out, preset=args.preset, recipe=args.recipe,
        objective=args.objective, init_from=args.init_from, replacement=args.replacement, contrastive=args.contrastive,
        temperature=args.temperature, lsi_init=args.lsi_init, lsi_components=args.lsi_components,
        lsi_offset=args.lsi_offset, embedding_lr_scale=args.embedding_lr_scale, pooling=args.pooling,
        remove_depth=args.remove_depth, l2_normalize=args.l2_normalize, epochs=args.epochs,
        time_budget=args.time_budget, overwrite=args.overwrite, bins=args.bins,
        universe=args.universe, genome=args.genome, max_length=args.max_length,
        model_overrides=dict(args.set), mask_ratio=args.mask_ratio, group_by=args.group_by, tss=args.tss,
        genes=args.genes, dna_embeddings=args.dna_embeddings, supervised=args.supervised,
        label_key=args.label_key, organ_key=args.organ_key, context=args.context, order=args.order,
        batching=args.batching, bucket_window=args.bucket_window, block_size=args.block_size,
        num_workers=args.num_workers, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2, max_grad_norm=args.max_grad_norm,
        precision=args.precision, compile=args.compile, activation_checkpointing=args.activation_checkpointing,
        parallel=args.parallel, device=args.device, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, log_every=args.log_every, progress=not args.no_progress,
        tensorboard=False if args.no_tensorboard else None, seed=args.seed, resume=args.resume)


def cmd_pretrain(args) -> int:
    return _train(config_from_args(args), args.out)


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a pretrained model on labelled cells (triplet, classify, batch-adversarial)",
        description="Fine-tune BASE_MODEL (a model folder of ours or geniml's) on labelled cells with the same "
        "training loop as pretrain (checkpoints, --resume, torchrun DDP/FSDP, bf16). The data is tokenized into "
        "the base model's vocabulary. OUT receives the run and OUT/model, the fine-tuned model folder that "
        "`atacformer embed` and `atacformer annotate` load (given OUT or OUT/model).")
    a = p.add_argument
    from atacformer.train.config import FINETUNE_OBJECTIVES

    a("base", metavar="BASE_MODEL", help="pretrained model folder (ours, or a geniml Atacformer folder)")
    a("--data", nargs="+", required=True, metavar="INPUT", help="labelled cells: .h5ad peak matrix, corpus "
      "folder (several allowed)")
    a("-o", "--out", required=True, metavar="DIR", help="output folder (new or empty; --resume / --overwrite)")
    a("--objective", choices=list(FINETUNE_OBJECTIVES), required=True,
      help="triplet: metric learning on pooled cells; classify: a label head (for `annotate` without a "
      "reference); batch-adversarial: profile reconstruction + a batch classifier behind gradient reversal")
    a("--labels-key", default="cell_type", help="obs column of the labels (triplet, classify; default cell_type)")
    a("--batch-key", help="obs column of the batches (batch-adversarial)")
    a("--no-balance", action="store_true", help="classify: plain cross-entropy (default: each label's loss "
      "weighted by its inverse frequency, so that rare types count as much as common ones)")
    a("--triplet-margin", type=float, default=1.0, help="TripletMarginLoss margin (default 1.0)")
    a("--triplet-mining", choices=["batch-hard", "semi-hard", "random"], default="semi-hard",
      help="how each anchor's positive and negative are picked in a batch (default semi-hard: the best measured)")
    a("--adversarial-weight", type=float, default=1.0, help="weight of the batch classifier's loss")
    a("--reversal-strength", type=float, default=1.0, help="gradient reversal factor")
    a("--lora-rank", type=int, default=0, help="LoRA adapters of this rank (peft); the backbone is frozen")
    a("--lora-alpha", type=float, help="LoRA alpha (default 2 x rank)")
    a("--lora-targets", nargs="+", metavar="MODULE", help="LoRA target modules (default: attention and "
      "feed-forward projections, or the token table of an encoder without layers)")
    a("--freeze-layers", type=int, metavar="N", help="train only the last N encoder layers (and the heads)")
    a("--mask-ratio", type=float, help="fraction of each cell's tokens hidden (batch-adversarial; default: the "
      "base model's)")
    a("--max-steps", type=int, help="optimizer steps (default: --epochs passes, capped by --time-budget)")
    a("--epochs", type=float, help="passes over the cells (default 10, at least 300 steps)")
    a("--time-budget", type=float, metavar="MINUTES", help="stop the plan at what fits (default 12)")
    a("--batch-size", type=int, help="cells per optimizer step over all ranks (default 128)")
    a("--grad-accum", type=int, default=1, help="micro-batches per step and rank")
    a("--lr", type=float, help="peak learning rate (default 2e-3)")
    a("--warmup-steps", type=int, help="linear warmup steps (default 20)")
    a("--seed", type=int, default=0)
    a("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    a("--overwrite", action="store_true", help="replace an earlier run in OUT")
    a("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    a("--parallel", choices=["ddp", "fsdp"], default="ddp", help="under torchrun")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    from atacformer.train.config import TrainConfig

    cfg = TrainConfig(
        data=args.data, out=args.out, init_from=args.base, objective=args.objective, label_key=args.labels_key,
        batch_key=args.batch_key, balanced=not args.no_balance, triplet_margin=args.triplet_margin, triplet_mining=args.triplet_mining,
        adversarial_weight=args.adversarial_weight, reversal_strength=args.reversal_strength,
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lora_targets=args.lora_targets,
        freeze_layers=args.freeze_layers, mask_ratio=args.mask_ratio, max_steps=args.max_steps, epochs=args.epochs,
        time_budget=args.time_budget, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, seed=args.seed, resume=args.resume,
        overwrite=args.overwrite, device=args.device, parallel=args.parallel, progress=not args.no_progress,
        tensorboard=False)
    return _train(cfg, args.out)


def _add_craft(sub) -> None:
    p = sub.add_parser(
        "craft", help="train CRAFT, a contrastive RNA-ATAC dual encoder, on paired (multiome) cells",
        description="Train CRAFT (LeRoy 2025): an ATAC encoder (new, or --base: a model folder of ours or "
        "geniml's) and a Geneformer-style RNA encoder (new, or --rna-base: a local BERT / Geneformer checkpoint "
        "folder) projected into one space by a CLIP loss, plus an RNA decoder from the ATAC embedding. Cells are "
        "paired by obs_names. OUT receives the run and OUT/model: `atacformer embed OUT/model ATAC.h5ad` and "
        "`atacformer embed OUT/model RNA.h5ad --modality rna` put both modalities in the shared space; "
        "`atacformer impute OUT/model ATAC.h5ad` predicts expression.")
    a = p.add_argument
    a("--atac", required=True, metavar="ATAC.h5ad", help="ATAC cells: peak matrix .h5ad (or a fragments file / "
      "corpus with --base)")
    a("--rna", required=True, metavar="RNA.h5ad", help="RNA counts of the same cells (raw integer counts)")
    a("-o", "--out", required=True, metavar="DIR", help="output folder (new or empty; --resume / --overwrite)")
    a("--base", metavar="MODEL", help="ATAC encoder to start from (the cells are tokenized into its vocabulary)")
    a("--rna-base", metavar="DIR", help="local BERT / Geneformer checkpoint folder for the RNA encoder "
      "(config.json, weights, token dictionary; gene medians when present)")
    a("--exclude-cells", metavar="FILE", help="cell names (one per line) never trained on, e.g. a held-out set")
    a("--max-steps", type=int, help="optimizer steps (default: --epochs passes, capped by --time-budget)")
    a("--epochs", type=float, help="passes over the paired cells (default 40, at least 300 steps)")
    a("--time-budget", type=float, metavar="MINUTES", help="stop the plan at what fits (default 12)")
    a("--batch-size", type=int, help="paired cells per step, the contrastive batch (default 128)")
    a("--lr", type=float, help="peak learning rate (default 1e-3)")
    a("--seed", type=int, default=0)
    a("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    a("--overwrite", action="store_true", help="replace an earlier run in OUT")
    a("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_craft)


def cmd_craft(args) -> int:
    from atacformer.train.config import TrainConfig

    cfg = TrainConfig(
        data=[args.atac], out=args.out, objective="craft", init_from=args.base, rna=args.rna, rna_base=args.rna_base,
        exclude_cells=args.exclude_cells, max_steps=args.max_steps, epochs=args.epochs,
        time_budget=args.time_budget, batch_size=args.batch_size, lr=args.lr, seed=args.seed, resume=args.resume,
        overwrite=args.overwrite, device=args.device, progress=not args.no_progress, tensorboard=False)
    return _train(cfg, args.out)


def _train(cfg, out) -> int:
    from atacformer.train.trainer import pretrain

    try:
        summary = pretrain(cfg)
    except KeyboardInterrupt:
        print(f"atacformer: interrupted; continue with the same command and --resume (the last checkpoint "
              f"in {out}/checkpoints is kept)", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
        print(f"model: {summary['model_dir']} (embed with: atacformer embed {summary['model_dir']} CELLS -o "
              "OUT.h5ad)", file=sys.stderr)
    return 0


def _add_experiment(sub) -> None:
    p = sub.add_parser(
        "experiment", help="run a plan of pretraining switches and tabulate them side by side",
        description="Run every run of PLAN.toml (a baseline and one-switch-at-a-time variants, or a grid), "
        "each as a pretraining run under OUT/runs/NAME, then write OUT/results.csv and OUT/results.md: "
        "final loss and embedding ARI on the labelled sets. Finished runs are reused when run again. "
        "See examples/masked_bin_plan.toml.")
    p.add_argument("plan", metavar="PLAN.toml")
    p.add_argument("--out", help="output folder (default: the plan's [experiment] out)")
    p.add_argument("--max-steps", type=int, help="override every run's max_steps")
    p.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs (by name)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args) -> int:
    from atacformer.train.experiment import run_experiment

    table = run_experiment(args.plan, out=args.out, max_steps=args.max_steps, only=args.only,
                           progress=not args.no_progress)
    print(table)
    return 0


def add_train_commands(sub) -> None:
    """Register ``pretrain``, ``finetune``, ``craft`` and ``experiment`` on the ``atacformer`` subcommand parser."""
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_craft(sub)
    _add_experiment(sub)
