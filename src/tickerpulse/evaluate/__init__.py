"""Task evaluation on generated answers: metrics (pure functions), the eval runner, base-vs-tuned compare and
its self-contained HTML report."""
