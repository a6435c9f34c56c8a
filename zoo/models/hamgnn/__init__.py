"""HamGNN (seed 004): E(3)-equivariant Hamiltonian network with parity and spin-orbit coupling."""

from zoo.models.hamgnn.model import HamGNN, HamGNNSOC

__all__ = ["HamGNN", "HamGNNSOC"]
