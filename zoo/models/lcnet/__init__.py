"""`lcnet`: graph LC-Net with complete local coordinates; see README.md."""

from zoo.models.lcnet.model import LCNet

__all__ = ["LCNet"]
