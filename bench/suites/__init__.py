"""One module per suite; each exposes run(opts) -> the suite's record (rows, summary, goals, notes)."""
