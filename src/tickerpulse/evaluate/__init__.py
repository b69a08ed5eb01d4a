"""Evaluation: any labeler (free generation, the served modes, a server over HTTP, baselines) over items,
scored into one `EvalResult` (eval.json) that the HTML reports and the model card render; the suite and
injection check the recipe runs; base-vs-tuned compare."""
