# The two commands a newcomer needs: `make demo` and `make test`. Everything bootstraps itself.
VENV ?= .venv
PY := $(VENV)/bin/python
TP := $(VENV)/bin/tickerpulse

.PHONY: bootstrap bootstrap-stream demo model test test-slow test-ci-slow test-integration clean

bootstrap:
	@scripts/bootstrap.sh

bootstrap-stream:
	@EXTRAS=dev,stream scripts/bootstrap.sh

demo: bootstrap
	$(TP) demo

# The default student `tickerpulse-sentiment` from ../shared/data (<= 45 min on 2 CPU cores); prints the
# card's headline table. docs/recipe.md.
model: bootstrap
	$(TP) recipe sentiment --config configs/recipe-sentiment.yaml

test: bootstrap
	$(PY) -m pytest -q

# Long tests (real training runs, builds) and tests against real servers. .ci/run runs `make test` then
# `make test-integration`; `make test-slow` is run by hand (it does not fit CI's budget on 2 cores).
test-slow: bootstrap
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

# The part of the slow group CI can afford (~10 min on 2 cores): a real SmolLM2 fine-tune (validation loss
# falls, early stopping keeps the best step, the answers stop on <|im_end|>), the MLX backend end to end and
# the sentiment recipe on a tiny slice (card numbers recomputed from its eval files), an mlx-lm config (sgd +
# linear_schedule) trained and fused, compiled blocks training like eager ones, and the stream's HTTP scorer
# against a keyed real `tickerpulse serve`.
test-ci-slow:
	@EXTRAS=dev,stream,mlx scripts/bootstrap.sh
	$(PY) -m pytest -q -m slow tests/train/test_sentiment_run.py tests/train/test_mlx.py tests/train/test_mlx_e2e.py \
		tests/train/test_mlx_lm_config.py tests/train/test_peft_setup.py \
		tests/recipe/test_recipe_e2e.py tests/stream/test_http_scorer.py

test-integration: bootstrap-stream
	$(PY) -m pytest -q -m integration || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info demo_out
