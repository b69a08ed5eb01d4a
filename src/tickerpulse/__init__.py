"""tickerpulse: a small open LLM turned into a fast, private financial-sentiment analyst.

The package folders are the pipeline stages a record flows through:
data -> distill -> train -> evaluate -> export -> serve -> stream, plus models (resolve/load bases)
and cli (one thin module per verb).
"""

__version__ = "0.1.0"
