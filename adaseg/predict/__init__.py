"""Prediction on the user's images: :class:`Predictor` (also ``adaseg.Predictor``), the
per-image :class:`Prediction`, pictures and the output folder of ``adaseg predict``."""

from adaseg.predict.predictor import PredictError, Predictor
from adaseg.predict.result import PausedStage, Prediction

__all__ = ["Predictor", "Prediction", "PausedStage", "PredictError"]
