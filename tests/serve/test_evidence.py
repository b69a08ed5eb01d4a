"""Evidence reasoning (`tickerpulse.serve.evidence`) with a real model: the installed student when there is one
(the recipe's model, for which evidence is meant), else SmolLM2 sharing the serve tests' runtime. The span is
checked with the engine itself: it lies in the post, and the post without it scores lower for the label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickerpulse.serve.evidence import MAX_SPAN_WORDS, MAX_WORD_CANDIDATES, SEGMENTS, _norm, target_mentions, unquotable
from tickerpulse.task.contract import LABELS, SentimentAnswer

# the most label-pass rows one item may cost: segments, the words of one segment, two per extension round
MAX_ROWS = SEGMENTS + MAX_WORD_CANDIDATES + 2 * (MAX_SPAN_WORDS - 1)


@pytest.fixture(scope="module")
def evidence_engine(engine):
    """The installed student in evidence mode (under the prompt it was trained with, `served_prompt_version`),
    else the shared SmolLM2 runtime with reasoning forced to evidence."""
    from tickerpulse.models.registry import named_model_dir
    from tickerpulse.serve.engine import SentimentEngine

    folder = named_model_dir("tickerpulse-sentiment")
    if (folder / "config.json").is_file():
        yield SentimentEngine(str(folder), reasoning="evidence", threads=1)
    else:
        yield SentimentEngine(engine.rt, reasoning="evidence")


def _posts(shared_data: Path, n: int) -> list[tuple[str, str | None]]:
    rows = [json.loads(line) for line in (shared_data / "twitter-financial-news-sentiment/valid-a.jsonl").open()]
    return [(r["text"], (r.get("tickers") or [None])[0]) for r in rows[:n]]


def _without(text: str, span: str) -> list[str]:
    """The text with each occurrence of `span` removed (as the search removes a span)."""
    out, start = [], 0
    while (i := text.find(span, start)) >= 0:
        out.append((text[:i].rstrip() + " " + text[i + len(span):].lstrip()).strip())
        start = i + 1
    return out


def test_evidence_is_a_span_of_the_post_whose_removal_lowers_the_label(evidence_engine, shared_data: Path) -> None:
    eng = evidence_engine
    items = _posts(shared_data, 10)
    fast = eng.analyze(items, mode="fast")
    ev = eng.analyze(items, mode="reasoning")
    found = 0
    for (text, target), f, a in zip(items, fast, ev):
        SentimentAnswer.model_validate(a)
        assert (a["sentiment"], a["score"], a["ticker"]) == (f["sentiment"], f["score"], f["ticker"])
        span = a["reasoning"]
        if not span:
            continue
        found += 1
        assert span in text and span == span.strip()
        assert len(span.split()) <= MAX_SPAN_WORDS
        assert target is None or target.lower() not in {_norm(w) for w in span.split()}
        assert "http" not in span  # links are no evidence
        label = LABELS.index(a["sentiment"])
        base = eng.label_probs([(text, target)])[0][label]
        after = [p[label] for p in eng.label_probs([(t, target) for t in _without(text, span)])]
        assert min(after) < base
    assert found >= 7  # a real post nearly always has words the label leans on


def test_evidence_answers_do_not_depend_on_their_batch(evidence_engine, shared_data: Path) -> None:
    items = _posts(shared_data, 4)
    together = evidence_engine.analyze(items, mode="reasoning")
    assert [evidence_engine.analyze([it], mode="reasoning")[0] for it in items] == together


def test_the_target_is_never_its_own_evidence(evidence_engine) -> None:
    text = "Microsoft soars: $MSFT beats estimates and Microsoft's cloud grows 30%"
    for target in ("MSFT", "$msft", "Microsoft"):
        span = evidence_engine.analyze([(text, target)], mode="reasoning")[0]["reasoning"]
        assert span in text
        assert not {_norm(w) for w in span.split()} & {"msft", "microsoft"}


def test_target_mentions_cover_symbols_names_and_the_name_table() -> None:
    import re

    text = "Johnson & Johnson and $JNJ: J&J rallies, while Apple (AAPL) and Brent crude slip"
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

    def named(target: str | None) -> list[str]:
        return [text[s:e] for i, (s, e) in enumerate(words) if i in target_mentions(text, words, target)]

    assert named("AAPL") == ["Apple", "(AAPL)"]
    assert named("Brent crude") == ["Brent", "crude"]
    assert "$JNJ:" in named("Johnson & Johnson") and "Johnson" in named("Johnson & Johnson")
    assert named(None) == []
    link = "Guidance cut https://t.co/abc (www.x.com)"
    link_words = [(m.start(), m.end()) for m in re.finditer(r"\S+", link)]
    assert unquotable(link, link_words, None) == {2, 3}


def test_other_companies_are_never_evidence() -> None:
    import re

    text = "Apple and $MSFT both beat estimates; $INTC guides lower"
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    for target in ("MSFT", "INTC", "Apple", None):
        banned = {text[s:e] for i, (s, e) in enumerate(words) if i in unquotable(text, words, target)}
        assert banned == {"Apple", "$MSFT", "$INTC"}, target


def test_evidence_cost_is_bounded_for_a_huge_post(evidence_engine) -> None:
    """A 40k-character post: the engine keeps the first 2000 characters, the search at most MAX_ROWS rows."""
    eng = evidence_engine
    post = ("Shares of $TSLA slid after the company missed delivery estimates, analysts cut targets. " * 500)[:40_000]
    before = eng.stats["evidence_rows"]
    (ans,) = eng.analyze([(post, "TSLA")], mode="reasoning")
    assert eng.stats["evidence_rows"] - before <= MAX_ROWS
    SentimentAnswer.model_validate(ans)
    assert ans["reasoning"] in post[:2000]


def test_empty_post_has_no_evidence_and_kinds_are_checked(evidence_engine, engine) -> None:
    from tickerpulse.serve.engine import SentimentEngine

    assert evidence_engine.analyze([("", None)], mode="reasoning")[0]["reasoning"] == ""
    assert evidence_engine.info()["reasoning"] == "evidence"
    assert engine.info() == {"prompt_version": "sentiment-v3", "reasoning": "generated"}  # no serving.json
    with pytest.raises(ValueError, match="reasoning"):
        SentimentEngine(engine.rt, reasoning="poetry")  # type: ignore[arg-type]
