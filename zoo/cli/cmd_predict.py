"""`zoo predict CKPT STRUCTURE... -o OUT`: a trained model's H for structures of any size."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict H blocks for structures with a trained checkpoint",
                       description="Streams exact augmented partitions and writes hermitized blocks as they come "
                                   "(bounded memory). One structure -> OUTPUT; several files or the frames of a "
                                   "trajectory -> one file each in the folder OUTPUT, with one model load.")
    p.add_argument("checkpoint", help="checkpoint.pt of a zoo bench run")
    p.add_argument("structures", nargs="+", metavar="STRUCTURE",
                   help="structure file(s) (any format ase.io.read understands; every frame of a trajectory)")
    p.add_argument("-o", "--output", default="H.npz",
                   help="output file (.npz ragged flat blocks, or .h5 a zoo structure file), or folder "
                        "(several structures, or --format deeph); Hartree, hermitized")
    p.add_argument("--format", choices=["npz", "h5", "deeph"], default=None,
                   help="output format (default: from the suffix; deeph: DeepH's processed folder, eV, OpenMX order)")
    p.add_argument("--device", default="auto")
    p.add_argument("--last", action="store_true", help="use the last epoch's weights, not the best validation ones")
    p.add_argument("--max-atoms-per-part", type=int, default=2000,
                   help="stream augmented partitions of at most this many labelled atoms (bounded memory)")
    p.add_argument("--raw", action="store_true",
                   help="write the backbone's raw blocks, not hermitized (diagnostics: H_ji(-R) != H_ij(R)^T in general)")
    p.add_argument("--eig", action="store_true",
                   help="also the spectrum at Gamma: OUT.eig.npz (eigenvalues, DOS, gap, E_F) and OUT.dos.png")
    p.add_argument("--overlap", default=None, metavar="FILE",
                   help="zoo structure file holding S of the same structure (required by --eig when the "
                        "checkpoint's dataset is non-orthogonal)")
    p.add_argument("--electrons", type=float, default=None,
                   help="electron count for E_F and the gap (default: the --overlap file's)")
    p.add_argument("--eig-sigma", type=float, default=0.0, metavar="EV",
                   help="large systems: the energy (eV) whose nearest states are computed by shift-invert")
    p.add_argument("--eig-count", type=int, default=64, help="large systems: how many states near --eig-sigma")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from zoo.bench.predict import predict_files
    from zoo.physics.units import HARTREE_EV

    results = predict_files(args.checkpoint, args.structures, args.output, device=args.device, best=not args.last,
                            max_atoms_per_part=args.max_atoms_per_part, hermitize=not args.raw, format=args.format,
                            progress=not args.quiet and sys.stderr.isatty(), eig=args.eig, overlap=args.overlap,
                            n_electrons=args.electrons, eig_sigma_ev=args.eig_sigma, eig_count=args.eig_count)
    for r in results:
        print(f"{r.output}: {r.n_atoms} atoms, {r.n_edges} edges, {r.n_parts} partition(s), predicted in "
              f"{r.seconds:.3f} s, {r.nbytes / 2**20:.1f} MiB")
        if r.eig:
            gap = f", gap {r.eig['gap'] * HARTREE_EV:.4f} eV, E_F {r.eig['fermi_level'] * HARTREE_EV:.4f} eV" \
                if "gap" in r.eig else ""
            print(f"  spectrum ({r.eig['method']}, {r.eig['n_orbitals']} orbitals{gap}): {', '.join(r.eig['files'])}")
    return 0
