"""Importers for real public data sets into the warehouse's source relations.

- ``spendpred.datasets.cdnow``: the CDNOW purchase log (23,570 customers, 1997-1998).
"""

from __future__ import annotations
