"""Local infrastructure: the service stack (S3, MLflow server, Prefect server) and manifests."""
