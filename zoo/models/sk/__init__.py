"""`sk`: two-centre Slater-Koster baseline; see README.md."""

from zoo.models.sk.model import SlaterKoster

__all__ = ["SlaterKoster"]
