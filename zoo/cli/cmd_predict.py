"""`zoo predict CKPT STRUCTURE -o H.npz`: a trained model's H for any structure ASE can read."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict H blocks for a structure with a trained checkpoint")
    p.add_argument("checkpoint", help="checkpoint.pt of a zoo bench run")
    p.add_argument("structure", help="structure file (any format ase.io.read understands)")
    p.add_argument("-o", "--output", default="H.npz", help="output .npz (ragged flat blocks, Hartree, hermitized)")
    p.add_argument("--device", default="auto")
    p.add_argument("--last", action="store_true", help="use the last epoch's weights, not the best validation ones")
    p.add_argument("--max-atoms-per-part", type=int, default=2000,
                   help="stream augmented partitions of at most this many labelled atoms (bounded memory)")
    p.add_argument("--raw", action="store_true",
                   help="write the backbone's raw blocks, not hermitized (diagnostics: H_ji(-R) != H_ij(R)^T in general)")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.bench.predict import predict_file

    out, n_atoms, n_edges, seconds = predict_file(args.checkpoint, args.structure, args.output, device=args.device,
                                                  best=not args.last, max_atoms_per_part=args.max_atoms_per_part,
                                                  hermitize=not args.raw)
    print(f"{out}: {n_atoms} atoms, {n_edges} edges, predicted in {seconds:.3f} s")
    return 0
