"""`escn`: augmented-partition eSCN / EquiformerV2 backbone; see README.md."""

from zoo.models.escn.model import ESCN

__all__ = ["ESCN"]
