"""Training: entry point, config, DeepSpeed engine, checkpoints, MLflow tracking and video data."""
