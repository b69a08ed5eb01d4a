"""Recipes: end-to-end builds of a shipped model from the project's own stages (data -> distill -> train ->
fuse -> evaluate -> model card). `sentiment` builds the default student `tickerpulse-sentiment`."""
