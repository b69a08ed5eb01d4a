"""`tickerpulse data ...`: validate, stats, convert, split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape  # file names, labels and texts are user data, never rich markup

data_app = typer.Typer(help="Validate, inspect, convert and split datasets.", no_args_is_help=True)
console = Console()


@data_app.command("validate")
def validate(
    folder: Path = typer.Argument(..., help="Folder with train/valid/test.jsonl, or one .jsonl file."),
    max_errors: int = typer.Option(50, help="Stop listing a file's errors after this many."),
) -> None:
    """Check every row of every split; print `file:line: reason` for each broken row (exit 2 if any)."""
    from tickerpulse.data.formats import split_files, validate_file

    files = {folder.stem: folder} if folder.is_file() else split_files(folder)
    if not files:
        console.print(f"[red]error:[/] no train/valid/test.jsonl in {escape(str(folder))}")
        raise typer.Exit(2)
    bad = False
    for path in files.values():
        rep = validate_file(path, max_errors=max_errors)
        for err in rep.errors:
            typer.echo(err, err=True)
        bad |= bool(rep.errors)
        status = "[red]FAIL[/]" if rep.errors else "[green]ok[/]"
        console.print(f"{status} {escape(path.name)}: {rep.rows} valid rows, format {rep.format or '?'}, {len(rep.errors)} errors")
    if bad:
        raise typer.Exit(2)


@data_app.command("stats")
def stats(
    folder: Path = typer.Argument(..., help="Folder with train/valid/test.jsonl, or one .jsonl file."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Whose tokenizer and chat template to count with."),
    max_seq_length: int = typer.Option(2048, "--max-seq-length", min=8, help="Count rows longer than this."),
) -> None:
    """Rows, format, token-length percentiles (chat template applied) and rows over --max-seq-length."""
    from rich.table import Table

    from tickerpulse.data.stats import folder_stats

    with console.status(f"tokenizing with {model}"):
        result = folder_stats(folder, model, max_seq_length)
    table = Table(title=escape(f"{folder} (tokens with {model}'s chat template)"))
    for col in ("split", "format", "rows", "p50", "p90", "p99", "max", "mean", f">{max_seq_length}", "tokens"):
        table.add_column(col, justify="left" if col in {"split", "format"} else "right", no_wrap=True)
    for st in result:
        over = f"[red]{st.over_max}[/]" if st.over_max else "0"
        table.add_row(st.split, st.format, str(st.rows), str(st.p50), str(st.p90), str(st.p99), str(st.max),
                      f"{st.mean:.0f}", over, f"{st.total_tokens:,}")
    console.print(table)
    for st in result:
        if st.labels:
            console.print(f"  {st.split} labels: " + escape(", ".join(f"{k} {v}" for k, v in st.labels.items())))
    if any(st.over_max for st in result):
        console.print(f"[yellow]rows over {max_seq_length} tokens are truncated in training (the answer may be cut)[/]")


def _label_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        for pair in item.split(","):
            raw, sep, label = pair.partition("=")
            if not sep:
                raise typer.BadParameter(f"{pair!r} is not RAW=LABEL", param_hint="--label-map")
            out[raw.strip()] = label.strip()
    return out


@data_app.command("convert")
def convert(
    inputs: list[Path] = typer.Argument(..., help="Dataset files (JSONL or CSV)."),
    to: str = typer.Option("chat", "--to", help="records ({id, text, label, score?, tickers?, targets?, source}) or chat."),
    out: Path = typer.Option(..., "--out", "-o", help="A .jsonl file (inputs concatenated) or a folder (one file per input)."),
    fmt: str | None = typer.Option(None, "--format", help="Force the reader: tfns, fpb, fiqa, finentity, csv or records (default: detect)."),
    text_col: str = typer.Option("text", "--text-col", help="CSV: text column (a 0-based number with --no-header)."),
    label_col: str | None = typer.Option("label", "--label-col", help="CSV: label column ('' when only a score exists)."),
    score_col: str | None = typer.Option(None, "--score-col", help="CSV: score column in [-1, 1]."),
    ticker_col: str | None = typer.Option(None, "--ticker-col", help="CSV: column of symbols (comma/space separated)."),
    id_col: str | None = typer.Option(None, "--id-col", help="CSV: id column."),
    label_map: list[str] = typer.Option([], "--label-map", help="CSV: raw=label pairs, e.g. '0=negative,1=positive,2=neutral'."),
    header: bool = typer.Option(True, "--header/--no-header", help="CSV: whether the first line names the columns."),
    delimiter: str | None = typer.Option(None, "--delimiter", help="CSV: field delimiter ('tab' for tabs; default: by file suffix)."),
    prompt_version: str = typer.Option("sentiment-v3", "--prompt-version", help="Task prompt for chat rows (sentiment-v1: models trained before targets)."),
) -> None:
    """Convert twitter-financial-news-sentiment, Financial PhraseBank, FiQA, FinEntity or a CSV into records or chat JSONL."""
    from tickerpulse.data.convert import convert as run_convert
    from tickerpulse.data.convert import output_paths
    from tickerpulse.data.readers import CsvColumns
    from tickerpulse.data.records import SOURCE_FORMATS

    if to not in ("records", "chat"):
        raise typer.BadParameter("must be records or chat", param_hint="--to")
    if fmt is not None and fmt not in SOURCE_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(SOURCE_FORMATS)}", param_hint="--format")
    try:
        output_paths(inputs, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from None
    if not label_col and not score_col:
        raise typer.BadParameter("a CSV needs a label column or a score column (--score-col)", param_hint="--label-col")
    sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter) if delimiter else None
    if sep is not None and len(sep) != 1:
        raise typer.BadParameter(f"{delimiter!r} is not one character (or 'tab')", param_hint="--delimiter")
    cols = CsvColumns(text=text_col, label=label_col or None, score=score_col, ticker=ticker_col, id=id_col,
                      label_map=_label_map(label_map), header=header, delimiter=sep)
    report = run_convert(inputs, to, out, fmt=fmt, csv_columns=cols, prompt_version=prompt_version)  # type: ignore[arg-type]
    labels = escape(", ".join(f"{k} {v}" for k, v in sorted(report.labels.items())))
    console.print(f"[green]ok[/] {report.records} records -> {report.rows} {to} rows ({labels}; "
                  f"{report.with_ticker} with a ticker) -> {escape(', '.join(report.outputs))}")


@data_app.command("split")
def split(
    inputs: list[Path] = typer.Argument(..., help="JSONL files to split (records, chat or any mlx-lm format)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for train/valid/test.jsonl and split.json."),
    valid: float = typer.Option(0.1, "--valid", min=0.0, max=0.99, help="Fraction of rows for valid.jsonl."),
    test: float = typer.Option(0.1, "--test", min=0.0, max=0.99, help="Fraction of rows for test.jsonl."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Keep label proportions alike across splits."),
    near_dup_threshold: float = typer.Option(1.0, "--near-dup-threshold", min=0.01, max=1.0,
                                             help="Also keep texts this similar together (character 5-gram Jaccard; 1 = exact duplicates only)."),
) -> None:
    """Deterministic split; rows with the same normalised text always land in the same split."""
    from rich.table import Table

    from tickerpulse.data.split import split_files as run_split

    result = run_split(inputs, out, valid=valid, test=test, seed=seed, stratify=stratify,
                       near_dup_threshold=near_dup_threshold)
    table = Table(title=escape(f"split of {', '.join(p.name for p in inputs)} (seed {seed}) -> {out}"))
    for col in ("split", "rows", "distinct texts", "labels"):
        table.add_column(col, justify="right" if col in {"rows", "distinct texts"} else "left")
    for s, n in result.rows.items():
        table.add_row(s, str(n), str(result.groups[s]), escape(" ".join(f"{k} {v}" for k, v in result.labels[s].items())))
    console.print(table)
    console.print(f"kept together: {result.grouped_rows} rows in {result.duplicate_groups} groups of duplicate text"
                  " (case, URLs, punctuation ignored); details in split.json")
    for texts in result.examples[:3]:
        console.print("  [dim]e.g.[/] " + escape(" | ".join(t[:70] for t in texts)), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
