"""Serving: the in-process `SentimentEngine` and the OpenAI-compatible FastAPI server (`tickerpulse serve`)."""
