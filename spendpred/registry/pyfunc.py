"""The pyfunc around a bundle: ``SpendPyfuncModel``, the code file it is logged from, its signature.

The pyfunc is logged "from code" (a three-line file, ``_MODEL_CODE``, that instantiates
``SpendPyfuncModel``), so nothing is pickled at all. MLflow is imported inside functions (it
is slow to import), and ``SpendPyfuncModel`` is built on first access through the module
``__getattr__`` (here and in :mod:`spendpred.registry`), so the class is importable as
``spendpred.registry.SpendPyfuncModel`` (as the logged code file does) without importing
MLflow when the registry is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any

from spendpred.registry.store import BUNDLE_ARTIFACT

_PIP_PACKAGES = ("spendpred", "mlflow", "torch", "transformers", "safetensors", "numpy", "pandas")


def _build_pyfunc_class() -> type:
    """Create ``SpendPyfuncModel`` (needs MLflow, so it is built on first access)."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    class SpendPyfuncModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc around a spendpred model bundle (the ``bundle`` artifact).

        The instance holds no weights: ``load_context`` loads ``SpendModel`` from the
        bundle folder and ``predict`` takes a DataFrame with the snapshot columns (``text``
        and the feature columns; others are ignored) and returns predicted spend.
        """

        def load_context(self, context: Any) -> None:
            from spendpred.model import SpendModel

            self.model = SpendModel.load(context.artifacts[BUNDLE_ARTIFACT])

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> np.ndarray:
            """Return predicted spend (numpy float64, >= 0) for each row of ``model_input``."""
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            batch_size = int((params or {}).get("batch_size", 256))
            return self.model.predict(model_input, batch_size=batch_size)

        # MLflow reads predict's type hints when the class is created; postponed annotations are
        # strings naming function-local imports it cannot resolve, so give it the objects.
        predict.__annotations__ = {
            "context": Any, "model_input": pd.DataFrame, "params": dict[str, Any] | None, "return": np.ndarray,
        }

    SpendPyfuncModel.__module__ = __name__.rpartition(".")[0]  # spendpred.registry: where the logged code imports it
    SpendPyfuncModel.__qualname__ = "SpendPyfuncModel"
    return SpendPyfuncModel


def __getattr__(name: str) -> Any:
    """Build ``SpendPyfuncModel`` on first access (module attribute hook); raise ``AttributeError`` otherwise."""
    if name == "SpendPyfuncModel":
        cls = _build_pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MODEL_CODE = '''"""MLflow models-from-code entry point of spendpred-regressor (written by spendpred.registry)."""

import mlflow

from spendpred.registry import SpendPyfuncModel

mlflow.models.set_model(SpendPyfuncModel())
'''
"""The pyfunc's code file: the model is logged from code, so nothing is pickled."""


def _signature(feature_columns: Sequence[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "text"), *(ColSpec("double", column) for column in feature_columns)])
    outputs = Schema([ColSpec("double", "predicted_spend")])
    params = ParamSchema([ParamSpec("batch_size", "long", 256)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


EXAMPLE_TEXT = (
    "member for 1 year. 3 completed orders, 182.40 spent. last 30 days: 6 views, 1 search. "
    "last active 2 days ago. orders: 12 days ago 54.90 books; 80 days ago 99.00 electronics. "
    'searches: 2 days ago "running shoes".'
)
"""A made-up behaviour text for the logged model's input example (never a real user's text)."""

def _input_example(feature_columns: Sequence[str]) -> Any:
    """One synthetic row matching the signature (the text above, neutral zero features)."""
    import pandas as pd

    return pd.DataFrame([{"text": EXAMPLE_TEXT, **{column: 0.0 for column in feature_columns}}])


def _pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc (listed, not inferred: inference loads the model).

    Local version labels are dropped (``torch==2.x+cpu`` -> ``torch==2.x``) so a GPU serving
    environment can install its own build; ``spendpred`` itself comes from this repository.
    """
    requirements = []
    for package in _PIP_PACKAGES:
        try:
            requirements.append(f"{package}=={metadata.version(package).split('+')[0]}")
        except metadata.PackageNotFoundError:
            requirements.append(package)
    return requirements
