"""`zoo perf`: inference time per atom vs structure size, as ratios in one run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="inference time per atom vs structure size for a model")
    p.add_argument("--model", default=None, help="registered backbone (untrained; cost does not depend on weights)")
    p.add_argument("--checkpoint", default=None, help="or a trained checkpoint (its model and basis)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--elements", default="Hf,O", help="elements for --model (comma separated)")
    p.add_argument("--basis", default="szv-molopt-sr")
    p.add_argument("--cutoff", type=float, default=4.0)
    p.add_argument("--reps", default="4,6,8,10", help="supercell repeats per axis (comma separated)")
    p.add_argument("--spacing", type=float, default=2.2, help="simple-cubic spacing (A)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tabulate import tabulate

    from zoo.bench.perf import measure
    from zoo.errors import ConfigError

    if args.checkpoint:
        from zoo.bench.predict import model_from_checkpoint

        model, info, dtype = model_from_checkpoint(args.checkpoint)
    elif args.model:
        from zoo.data.torch_data import DatasetInfo
        from zoo.models.registry import build_model
        from zoo.physics.basis import OrbitalLayout, get_basis, symbol_to_z

        import torch

        zs = [symbol_to_z(s.strip()) for s in args.elements.split(",") if s.strip()]
        info = DatasetInfo(OrbitalLayout(get_basis(args.basis), zs), args.cutoff)
        torch.manual_seed(0)
        model, dtype = build_model(args.model, info, preset=args.preset), torch.float32
    else:
        raise ConfigError("zoo perf needs --model NAME or --checkpoint CKPT")
    try:
        reps = [int(x) for x in args.reps.split(",")]
    except ValueError:
        raise ConfigError(f"--reps must be comma-separated integers, got {args.reps!r}") from None
    rows = measure(model, info, reps, spacing=args.spacing, dtype=dtype)
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    return 0
