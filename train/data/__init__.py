"""Video data: files on disk, the dataset index, samplers, DALI pipelines and synthetic videos."""
