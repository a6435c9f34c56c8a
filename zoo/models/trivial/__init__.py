"""`trivial`: the smallest model that honours the contract; see README.md."""

from zoo.models.trivial.model import TrivialTwoCentre

__all__ = ["TrivialTwoCentre"]
