"""The environment every benchmark gives the processes it starts: offline, no telemetry."""

from __future__ import annotations

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}
"""Nothing a benchmark runs may reach the network for weights or report usage."""
