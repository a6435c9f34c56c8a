"""Backbones and their registry. See `contract` for what a backbone must do."""

from zoo.models.contract import Backbone, Prediction, symmetrize_prediction
from zoo.models.registry import build_model, list_models, load_preset, model_class, register_model

__all__ = ["Backbone", "Prediction", "symmetrize_prediction", "build_model", "list_models", "load_preset",
           "model_class", "register_model"]
