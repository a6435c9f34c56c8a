"""`trivial`: the smallest model that honours the contract; see README.md."""

from zoo.models.trivial.model import TrivialTwoCentre
from zoo.models.trivial.spinful import TrivialSOC

__all__ = ["TrivialTwoCentre", "TrivialSOC"]
