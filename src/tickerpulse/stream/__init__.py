"""Streaming: sources -> bus -> processor -> store -> dashboard, each an interface with an embedded default."""
