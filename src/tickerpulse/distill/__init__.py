"""Teacher -> student distillation: label raw financial texts with any OpenAI-compatible endpoint (or the
dataset's own gold labels), validate every answer against the task schema, cache each result on disk so a
rerun is free and a killed job resumes, and write chat JSONL train/valid/test that `tickerpulse train`
reads unchanged, plus a report.

Modules: `inputs` (records to label), `select` (dedupe, then the data stage's one splitter), `teacher` (clients),
`cache` (SQLite), `job` (the pipeline), `report` (report.json / report.md), `testing_teacher` (a small
OpenAI-protocol server answering from gold labels, with fault injection, for tests and demos).
"""
