"""Data: the three mlx-lm JSONL formats, labeled records from real datasets, the sentiment task prompt."""
