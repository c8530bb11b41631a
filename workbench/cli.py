"""Command line: ``workbench synth | train-model | train-dictionary | reproduce | export | workshop``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from workbench import _offline  # noqa: F401


def _synth(args: argparse.Namespace) -> int:
    from workbench.datasets import WorldConfig, synthesize

    world = synthesize(WorldConfig.for_scale(args.scale))
    root = world.save(Path(args.out) if args.out else None)
    print(f"wrote the {args.scale} world to {root}: {world.counts()}")
    return 0


def _train_model(args: argparse.Namespace) -> int:
    from workbench.datasets import WorldConfig, synthesize
    from workbench.lm_training import LMTrainConfig, train_lm
    from workbench.paths import data_dir, embedded_model_dir

    world = synthesize(WorldConfig.for_scale(args.scale))
    out = Path(args.out) if args.out else (embedded_model_dir() if args.scale == "full" else data_dir() / "models" / args.scale)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else data_dir() / "checkpoints" / f"lm_{args.scale}"
    _, _, state = train_lm(world, LMTrainConfig.for_scale(args.scale), out, ckpt, max_steps=args.max_steps)
    print(f"step {state.step}, {state.tokens_seen} tokens, {state.wall_time_s:.0f} s; model in {out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from workbench.reproduce import reproduce

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    summary = reproduce(scale=args.scale, only=only, retrain=args.retrain, export=args.export)
    print(f"summary written to {summary}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from workbench.export import export_html

    try:
        pages = export_html(scale=args.scale, out_dir=Path(args.out) if args.out else None)
    except FileNotFoundError as err:
        print(f"workbench export: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(pages)} offline HTML pages to {pages[0].parent}")
    return 0


def _workshop(args: argparse.Namespace) -> int:
    from workbench.workshop import build_workshop

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    written = build_workshop(out_dir=Path(args.out) if args.out else None, only=only)
    if not written:
        print("workbench workshop: no notebook has cells tagged `solution`, so there is no exercise to write",
              file=sys.stderr)
        return 1
    print(f"wrote {len(written)} exercises notebook(s) to {written[0].parent}: {', '.join(p.name for p in written)}")
    return 0


def _train_dictionary(args: argparse.Namespace) -> int:
    import os

    import torch
    import torch.distributed as dist

    from workbench.dictionaries.job import DictionaryJob, run_job

    # under torchrun (WORLD_SIZE > 1) join its process group: gloo on CPU, NCCL on GPUs
    owned = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        job = DictionaryJob.from_json(args.config)
        rank = dist.get_rank() if dist.is_initialized() else 0
        result = run_job(job, progress=not args.no_progress and rank == 0)
    except ValueError as err:
        print(f"workbench train-dictionary: {err}", file=sys.stderr)
        return 2
    finally:
        if owned:
            dist.destroy_process_group()
    if rank == 0:
        final = result.history[-1] if result.history else {}
        print(f"trained {job.architecture} ({job.d_sae} features at {job.hook}) for {result.steps} steps, "
              f"{result.activations_per_s:.0f} activations/s, explained variance "
              f"{final.get('explained_variance', float('nan')):.3f}, L0 {final.get('l0', float('nan')):.1f}; "
              f"saved to {job.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="synthesize the data sets under data/datasets/<scale>")
    p.add_argument("--scale", choices=["full", "smoke"], default="full")
    p.add_argument("--out", help="folder to write to (default data/datasets/<scale>)")
    p.set_defaults(fn=_synth)

    p = sub.add_parser("train-model", help="train the embedded model from scratch (resumes from its checkpoint)")
    p.add_argument("--scale", choices=["full", "smoke"], default="full")
    p.add_argument("--out", help="model folder (default data/models/embedded for full scale)")
    p.add_argument("--checkpoint-dir", help="resume/checkpoint folder (default data/checkpoints/lm_<scale>)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (resume later)")
    p.set_defaults(fn=_train_model)

    p = sub.add_parser("train-dictionary", help="train a dictionary from a JSON config, on one process or under "
                       "`torchrun --nproc_per_node N -m workbench train-dictionary CONFIG.json`")
    p.add_argument("config", help="JSON file: model, hook, tokens or store, architecture, d_sae, sae, train, output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=_train_dictionary)

    p = sub.add_parser("reproduce", help="execute every notebook headlessly and write results/summary.md")
    p.add_argument("--scale", choices=["full", "smoke"], default="full")
    p.add_argument("--only", help="comma-separated notebook numbers, e.g. 03,04")
    p.add_argument("--retrain", action="store_true", help="retrain the embedded model in notebook 02 first")
    p.add_argument("--export", action="store_true", help="then export the executed notebooks to offline HTML")
    p.set_defaults(fn=_reproduce)

    p = sub.add_parser("export", help="convert the executed notebooks in runs/<scale>/ to offline HTML")
    p.add_argument("--scale", choices=["full", "smoke"], default="full")
    p.add_argument("--out", help="folder to write to (default runs/<scale>/html)")
    p.set_defaults(fn=_export)

    p = sub.add_parser("workshop", help="build the exercises edition of the notebooks that have `solution` cells")
    p.add_argument("--out", help="folder to write to (default workshop/)")
    p.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,03")
    p.set_defaults(fn=_workshop)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
