"""spendpred: purchasing-power scoring for e-commerce users, run by Apache Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
