"""Generation options shared by `eval` and `compare` (one definition, so both verbs read the same)."""

from __future__ import annotations

import typer

DATA = typer.Option(None, "--data", help="A .jsonl file (chat, completions or labeled records) or a data folder.")
SPLIT = typer.Option("test", help="Which <split>.jsonl of a data folder to read.")
LIMIT = typer.Option(None, help="Evaluate a seeded random sample of N items (file order kept).")
BATCH_SIZE = typer.Option(16, help="Prompts generated together.")
MAX_TOKENS = typer.Option(128, help="Cap on generated tokens per answer.")
TEMP = typer.Option(0.0, "--temp", help="Sampling temperature (0 = greedy).")
TOP_P = typer.Option(1.0, help="Nucleus sampling mass (with --temp > 0).")
SEED = typer.Option(0, help="Seed for --limit sampling and for sampling.")
TASK = typer.Option("auto", help="auto | sentiment | text.")
PROMPT_TICKER = typer.Option("first", help="Labeled records: put the first gold ticker in the prompt (first) or none.")
METRIC = typer.Option([], "--metric", help="Text metric: exact, contains or module:function (repeatable).")
REGEX = typer.Option(None, help="Extract the answer with this regex (group 1), then exact-match it.")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | mps.")
DTYPE = typer.Option("auto", help="auto | float32 | bfloat16 | float16.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
