"""The ops dashboard: erasure requests against their deadline, the lineage, charts, and /metrics.

Read-only against the ledger, the erasure record (S3) and the registry (MLflow). Run it with
``python -m dashboard --port 8050`` (``make up`` starts it) or call ``serve(host, port, model)``.
"""

from dashboard.server import serve

__all__ = ["serve"]
