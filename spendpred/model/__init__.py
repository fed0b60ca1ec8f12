"""The spend regressor: a fine-tuned BERT-family encoder with a small head (see DESIGN.md).

Public API: ``TrainConfig``, ``TrainResult``, ``train_regressor``, ``fit_head_only`` and
``SpendModel`` (``predict``, ``save``, ``load``). Importing this package imports torch but
touches no GPU.
"""

from __future__ import annotations

from spendpred.model.bundle import SpendModel
from spendpred.model.losses import LOSSES
from spendpred.model.network import FREEZE_CHOICES
from spendpred.model.training import TrainConfig, TrainResult, fit_head_only, train_regressor

__all__ = [
    "FREEZE_CHOICES",
    "LOSSES",
    "SpendModel",
    "TrainConfig",
    "TrainResult",
    "fit_head_only",
    "train_regressor",
]
