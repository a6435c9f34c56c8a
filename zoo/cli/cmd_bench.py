"""`zoo bench`: train + validate + test one model on one dataset, append a leaderboard row."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="train, validate and test a model; append a leaderboard row")
    p.add_argument("--model", help="registered backbone (see `zoo models`)")
    p.add_argument("--dataset", help="catalogue name or dataset directory")
    p.add_argument("--preset", default="cpu", help="preset in the model's presets.yaml (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="run once per seed (comma-separated), one leaderboard row each; `zoo leaderboard` "
                        "aggregates them (mean ± std, n)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-epochs", type=int, default=None, help="epoch budget (overrides the preset)")
    budget.add_argument("--time-budget", type=float, default=None, metavar="MIN", help="wall-clock budget in minutes")
    budget.add_argument("--cpu-budget", type=float, default=None, metavar="MIN",
                        help="process CPU-time budget in minutes (time.process_time, summed over the run)")
    p.add_argument("--partitioner", default=None,
                   help="slices | rcb | metis: train on augmented partitions; 'none': full graphs "
                        "(default: the preset's partition section, else full graphs)")
    p.add_argument("--t-slice", type=float, default=None, help="slice thickness (A) for --partitioner slices")
    p.add_argument("--n-parts", type=int, default=None, help="number of partitions (balanced partitioners)")
    p.add_argument("--virtual", choices=["none", "one-way", "two-way"], default=None,
                   help="virtual halo nodes/edges: none (raw partitions), one-way (seed), two-way")
    p.add_argument("--halo-hops", type=int, default=None,
                   help="build the halo for this many message-passing layers instead of the model's (ablations)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field: a training key (lr, batch_size, ...) or a model hyper-parameter; "
                        "'train.key' / 'model.key' to be explicit; repeatable (standardize=true: target "
                        "standardization). With --resume only budgets and device may be set")
    p.add_argument("--size", default=None, help="catalogue size (default: small, or the name's @size: md17-h2o@medium)")
    p.add_argument("--leaderboard-dir", default="leaderboards")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    p.add_argument("--eig-max-orbitals", type=int, default=6000,
                   help="skip dense spectrum metrics for test structures with more orbitals")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.bench.run import BenchOptions, run_bench
    from zoo.errors import ConfigError

    if not args.resume and (not args.model or not args.dataset):
        raise ConfigError("zoo bench needs --model and --dataset (or --resume RUN_DIR)")
    opts = BenchOptions(model=args.model or "", dataset=args.dataset or "", preset=args.preset, seed=args.seed,
                        max_epochs=args.max_epochs, time_budget_min=args.time_budget,
                        cpu_budget_min=args.cpu_budget, partitioner=args.partitioner,
                        t_slice=args.t_slice, n_parts=args.n_parts, virtual=args.virtual,
                        halo_hops=args.halo_hops, overrides=args.overrides,
                        leaderboard_dir=args.leaderboard_dir, runs_dir=args.runs_dir, size=args.size,
                        resume=args.resume, quiet=args.quiet, eig_max_orbitals=args.eig_max_orbitals)
    seeds = [args.seed]
    if args.seeds is not None:
        if args.resume:
            raise ConfigError("--seeds starts new runs; it does not go with --resume")
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds expects comma-separated integers such as 0,1,2, got {args.seeds!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds needs distinct integers, got {args.seeds!r}")
    import dataclasses

    for seed in seeds:
        row = run_bench(dataclasses.replace(opts, seed=seed))
        if row:
            keys = ["node_mae_mev", "edge_mae_mev", "total_mae_mev", "eig_rel_l1", "gap_err_mev", "epochs_run",
                    "stop_reason", "time_per_epoch_s"]
            print(f"run folder: {row['run_dir']} (seed {seed})")
            print("  ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys))
    return 0
