"""Validate step: a Great Expectations suite over the ingested splits, a gate before encoding.

Every check a user can tune lives in ValidateConfig and is named in its `severity` map:

    not_blank           text is neither null nor whitespace only
    label_in_set        label is present and a class index listed in ingest.json
    class_balance       more than one class, and each class holds at least min_class_fraction
    token_length        shortest review >= min_tokens, longest <= max_tokens
    kept_text           the median review keeps >= min_kept_share of its non-space characters in tokens
    chars_per_token     the median review has <= max_chars_per_token characters per token (text without spaces
                        under the word tokenizer is one or two "words" a review, which no model learns from)
    duplicates          share of repeated texts within a split <= max_duplicate_fraction
    train_test_overlap  share of test texts also in train <= max_train_test_overlap

All of them run as GX expectations, one batch per split, against one ephemeral context.
GX never sees the texts themselves. Each split is streamed from Parquet in record batches
(tasks.store.iter_parquet, STREAM_ROWS rows at a time) and every review is reduced on the way
to a few numbers, the columns GX checks:

    label        as ingested, nulls kept as nulls
    n_tokens     length after clean_text in encode.tokenizer's units (below; a null text counts as "")
    kept_share   share of the text's non-space characters that end up in tokens (tasks.text.kept_shares;
                 encode.tokenizer's rule, auto's choice for auto), null for a null or blank text
    text_chars   length of the stripped text (0: empty or whitespace only), null for a null text
    text_hash    64-bit hash of the raw text (pandas' hash_pandas_object), null for a null text
    chars_per_token  text_chars / n_tokens, null for a review of no tokens (derived once the units are known)

So memory holds one batch of text plus about 33 bytes per review (label 8, n_tokens 4,
kept_share 4, text_chars 4, text_hash 8 and its null flag 1, chars_per_token 4), flat in the length of the texts,
and about 33 MB per million reviews in their number (for tokenizer auto, train's reviews 8 bytes
more, and a count of train's distinct words, until auto has chosen). The hash stands for the text in
the duplicates and train_test_overlap checks: two texts are "the same" when their hashes are;
with 2**64 values, the chance that any two of a million distinct reviews collide is about
3 in 100 million, so a false duplicate is negligible. Cross-split values ("this test review's
hash is in train") are computed with pandas on these columns and handed to GX as an extra
column, so every check lands in the same suite results and Data Docs. Length stats and label
counts come from the same columns.

Lengths (token_length, chars_per_token, length_stats) count what encode will see: words for the word tokenizer,
normalised characters (spaces and punctuation included) for char. Subword pieces are learnt at
encode, so they have no fixed rule here: they count characters, which pieces are built from. A
piece holds at least one character, so a character count bounds the piece count from above, and
it is 0 only for an empty text: a review such as "..." or "♥♥" has no words but is not empty to a
subword model. Tokenizer auto is resolved here as encode resolves it, by the same function
(tasks.vocabulary_rule.choose_tokenizer) on the same counts of train's words, gathered in the pass
that measures train: train is read first, measured both in words and in characters, and keeps the
chosen tokenizer's lengths and kept shares; val and test are measured in the chosen units only.
The unit is written down (validation.json's length_unit: "words" or "characters", beside
tokenizer, tokenizer_resolved and, for auto, tokenizer_auto as encode.json records it) and said in
the check's messages; tasks.validate_rules.LENGTH_UNITS maps each tokenizer to it. Files written
to the step folder:

    validation.json   passed, checks, length_stats, length_unit, tokenizer, tokenizer_resolved, [tokenizer_auto],
                      kept_share, label_counts, warnings
    gx/suite.json     {suite name: GX expectation suite JSON}
    gx/results.json   {validation name: GX validation result JSON}
    data_docs/        GX Data Docs (index.html), readable offline: the scripts, stylesheets and fonts GX links from
                      CDNs are bundled copies in data_docs/static/vendor/ (tasks/data_docs.py)
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.caching import CacheSlot, produce_step, step_task
from tasks.config import ValidateConfig
from tasks.data_docs import make_offline
from tasks import store
from tasks.errors import RnnflowError
from tasks.store import SPLITS, RunFiles, StepOutput, iter_parquet, parquet_rows, read_json, write_json
from tasks.logs import step_logger
from tasks.morphemes import analyse_many
from tasks.text import clean_text, kept_shares, token_counts, tokenize_many
from tasks.validate_rules import LENGTH_UNITS, Rule, TextRule, overlap_rules, suite_rules
from tasks.vocabulary_rule import token_frequencies

REQUIRED_COLUMNS = ("text", "label")
SUITE_NAME = "reviews"
OVERLAP_SUITE_NAME = "reviews_test_vs_train"
DATA_DOCS_SITE = "rnnflow"
SUMMARY_MESSAGES = 5  # the summary travels in every StepOutput: keep it small

class DataValidationError(RnnflowError):
    """The data cannot go on to encoding: the message is one sentence that says what and how to fix it."""

    def __init__(self, message: str, output_dir: Path | None = None):
        super().__init__(message)
        self.message = message
        self.output_dir = Path(output_dir) if output_dir is not None else None

    def __reduce__(self):  # Prefect pickles task exceptions: keep both arguments
        return (type(self), (self.message, self.output_dir))


# --------------------------------------------------------------------------- inputs


def _split_input(ingest_dir: Path, split: str) -> tuple[Path, int]:
    """The split's Parquet file and its row count, from the footer: every input problem is found before any text is read."""
    import pyarrow.parquet as pq

    path = Path(ingest_dir) / f"{split}.parquet"
    if not path.is_file():
        raise DataValidationError(f"Validation input {path} does not exist: run the ingest step first (rnnflow run).")
    try:
        names = pq.read_schema(path).names
        rows = parquet_rows(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataValidationError(f"Validation input {path} is not a readable Parquet file ({err}): rerun the ingest step.") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataValidationError(
            f"Validation input {path} has no column {missing[0]!r} (columns: {', '.join(names)}): rerun the ingest step."
        )
    if rows == 0:
        raise DataValidationError(f"Validation input {path} has no rows: check data.max_reviews and data.val_fraction, then rerun ingest.")
    return path, rows


def _read_split(
    ingest_dir: Path, split: str, batch_rows: int, text_rule: TextRule, word_counts: Counter[str] | None = None
) -> pd.DataFrame:
    """One split as GX sees it: label, kept_share, text_chars, text_hash and n_tokens per review, streamed batch by batch.

    Only one batch of text is in memory at a time; the per-review arrays are preallocated from the footer's row count.
    While auto has not chosen, n_tokens and kept_share come once per length unit of the candidate tokenizers (columns
    "n_tokens:words", "kept_share:characters", ...; _measured_as keeps one), and word_counts, when given,
    counts the words of the text as encode counts them, for the choice.
    """
    path, rows = _split_input(ingest_dir, split)
    units = {LENGTH_UNITS[tokenizer][1]: LENGTH_UNITS[tokenizer][0] for tokenizer in text_rule.candidates}  # words: word, characters: char
    n_tokens = {unit: np.zeros(rows, dtype=np.int32) for unit in units}
    kept_share = {unit: np.full(rows, np.nan, dtype=np.float32) for unit in units}
    text_chars = np.full(rows, np.nan, dtype=np.float32)
    text_hash = np.zeros(rows, dtype=np.uint64)
    text_null = np.ones(rows, dtype=bool)
    labels = []
    start = 0
    for batch in iter_parquet(path, columns=list(REQUIRED_COLUMNS), batch_rows=batch_rows):
        stop = start + len(batch)
        texts = batch["text"]
        raw = texts.fillna("").astype(str).tolist()
        # Tags such as <br /> are not words: count tokens the way encoding will see them.
        if text_rule.analyzer != "none":  # encode's tokenizer reads the morphemes of the text as ingested: so do the counts
            raw = analyse_many(raw, text_rule.analyzer)
        cleaned = [clean_text(t) for t in raw]
        for unit, rule in units.items():  # characters and subword pieces measure alike: characters, every one kept
            if rule == "word":  # one word pass gives both the lengths and, for auto, the words
                words, offsets = tokenize_many(cleaned, text_rule.lowercase, "word")
                n_tokens[unit][start:stop] = np.diff(offsets)
            else:
                n_tokens[unit][start:stop] = token_counts(cleaned, text_rule.lowercase, rule)
            kept_share[unit][start:stop] = kept_shares(cleaned, text_rule.lowercase, rule)
        if word_counts is not None:
            # Encode counts the text as ingested: the cleaned text, unless ingest kept HTML (data.strip_html false).
            seen = words if cleaned == raw else tokenize_many(raw, text_rule.lowercase, "word")[0]
            word_counts.update(token_frequencies(seen))
        text_chars[start:stop] = texts.str.strip().str.len().to_numpy(dtype=np.float32, na_value=np.nan)
        text_hash[start:stop] = pd.util.hash_pandas_object(texts, index=False).to_numpy()
        text_null[start:stop] = texts.isna().to_numpy()
        labels.append(batch["label"].reset_index(drop=True))
        start = stop
    measured = {f"{name}:{unit}": values[unit] for name, values in (("n_tokens", n_tokens), ("kept_share", kept_share)) for unit in units}
    return pd.DataFrame(
        {
            "label": pd.concat(labels, ignore_index=True),
            **measured,
            "text_chars": text_chars,
            "text_hash": pd.arrays.IntegerArray(text_hash, text_null),  # UInt64 with nulls where the text is null
        }
    )


def _measured_as(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The split's frame with the n_tokens and kept_share in one length unit (words, characters), the other's dropped,
    and chars_per_token in that unit (null where a review has no tokens: token_length's to name)."""
    chosen = {f"{name}:{unit}": name for name in ("n_tokens", "kept_share")}
    others = [column for column in frame.columns if ":" in column and column not in chosen]
    frame = frame.drop(columns=others).rename(columns=chosen)
    tokens = frame["n_tokens"].to_numpy(dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["chars_per_token"] = np.where(tokens > 0, frame["text_chars"].to_numpy(dtype=np.float32) / tokens, np.nan).astype(np.float32)
    return frame


def _read_splits(ingest_dir: Path, batch_rows: int, text_rule: TextRule) -> tuple[dict[str, pd.DataFrame], TextRule]:
    """Every split's frame, and the text rule with auto resolved: train first, whose words make auto's choice
    (tasks.vocabulary_rule, as encode makes it), so val and test are measured in the chosen units only."""
    word_counts: Counter[str] | None = Counter() if text_rule.tokenizer == "auto" else None
    train = _read_split(ingest_dir, "train", batch_rows, text_rule, word_counts)
    if word_counts is not None:
        text_rule = text_rule.resolve_auto(word_counts)
    frames = {"train": _measured_as(train, text_rule.length_unit)}
    del train, word_counts  # the other candidate's columns and train's distinct words: freed before val and test are read
    frames.update({split: _measured_as(_read_split(ingest_dir, split, batch_rows, text_rule), text_rule.length_unit)
                   for split in SPLITS if split != "train"})
    return frames, text_rule


def _read_labels(ingest_dir: Path) -> list[str]:
    path = Path(ingest_dir) / "ingest.json"
    try:
        labels = read_json(path)["labels"]
    except FileNotFoundError:
        raise DataValidationError(f"Validation input {path} does not exist: run the ingest step first (rnnflow run).") from None
    except (ValueError, KeyError, TypeError):
        raise DataValidationError(f"Validation input {path} has no 'labels' list of class names: rerun the ingest step.") from None
    if not isinstance(labels, list) or not labels:
        raise DataValidationError(f"Validation input {path} has an empty or malformed 'labels' list: rerun the ingest step.")
    return [str(name) for name in labels]


# --------------------------------------------------------------------------- derived columns and stats


def _length_stats(n_tokens: pd.Series) -> dict[str, float | int]:
    values = n_tokens.to_numpy(dtype=np.int64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 2),
        "median": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "max": int(values.max()),
    }


def _kept_stats(kept_share: pd.Series) -> dict[str, float | None]:
    """Median, mean and 10th percentile of the kept shares of a split's non-blank reviews (None when all are blank)."""
    values = kept_share.to_numpy(dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"median": None, "mean": None, "p10": None}
    return {name: round(float(v), 4) for name, v in zip(("median", "mean", "p10"), (np.median(values), values.mean(), np.percentile(values, 10)))}


def _split_facts(frame: pd.DataFrame, label_counts: dict[str, int]) -> dict[str, Any]:
    """What a check's sentence may say of its split beside GX's figure: the classes present, the median review's size."""
    return {
        "classes_present": ", ".join(name for name, n in label_counts.items() if n) or "none",
        "median_tokens": float(frame["n_tokens"].median()) if len(frame) else None,
        "any_tokens": bool((frame["n_tokens"] > 0).any()),
        "median_chars": float(frame["text_chars"].median()) if frame["text_chars"].notna().any() else None,
    }


def _label_counts(labels: pd.Series, names: list[str]) -> dict[str, int]:
    counts = {name: 0 for name in names}
    for value, n in labels.value_counts(dropna=False).items():
        if pd.isna(value):
            key = "missing"
        elif isinstance(value, (int, np.integer)) and 0 <= int(value) < len(names):
            key = names[int(value)]
        else:
            key = str(value)
        counts[key] = counts.get(key, 0) + int(n)
    return counts


# --------------------------------------------------------------------------- Great Expectations


def _import_gx() -> tuple[Any, Any]:
    # GX reports usage over the network at import time unless told not to; offline it only logs errors.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _new_context(gx: Any, data_docs_dir: Path) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In-memory stores as usual, minus the default Data Docs site in a temp folder:
    # the only site is the one inside the step folder.
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False))
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.add_data_docs_site(
        DATA_DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
        },
    )
    return context


def _add_suite(gx: Any, context: Any, name: str, rules: list[Rule]) -> Any:
    return _add_suite_of(gx, context, name, [rule.expectation for rule in rules])


def _add_suite_of(gx: Any, context: Any, name: str, expectations: list[Any]) -> Any:
    """A suite of these expectations in the context (scoring's drift suite is built the same way, tasks/drift.py)."""
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def _run(gx: Any, context: Any, source: Any, name: str, suite: Any, frame: pd.DataFrame, run_id: Any) -> Any:
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY", run_id=run_id)


def _checks_from(result: Any, rules: list[Rule], split: str, severity: dict[str, str], facts: dict) -> list[dict[str, Any]]:
    by_key = {}
    for item in result.results:
        meta = item.expectation_config.meta or {}
        by_key[meta.get("rule")] = item
    checks = []
    for rule in rules:
        item = by_key[rule.key]
        if item.exception_info and item.exception_info.get("raised_exception"):
            observed = None
            seen = f"GX could not evaluate it ({item.exception_info.get('exception_message')})"
        else:
            observed, seen = rule.observe(item.result or {})
            if rule.describe_fact is not None:
                seen = rule.describe_fact(item.result or {}, facts) or seen
        passed = bool(item.success)
        if passed:
            message = f"Check {rule.check} passed on split {split}: {seen}, bound {rule.bound}."
        else:
            message = f"Check {rule.check} failed on split {split}: {seen}, bound {rule.bound}; {rule.fix}."
        checks.append(
            {
                "check": rule.check,
                "split": split,
                "observed": observed,
                "bound": rule.bound,
                "severity": severity[rule.check],
                "passed": passed,
                "message": message,
                "expectation": item.expectation_config.type,
            }
        )
    return checks


# --------------------------------------------------------------------------- the step


def validate_reviews(
    cfg: ValidateConfig, ingest_dir: Path, out_dir: Path, *, text_rule: TextRule | None = None, batch_rows: int | None = None
) -> dict[str, Any]:
    """Run the review suite over train, val and test; write results and Data Docs to out_dir; return a summary.

    Failed data checks do not raise: they are written down and the summary says passed=False.
    Only unusable input (a missing or unreadable file, a missing column, an empty split) raises.
    Splits are read batch_rows reviews at a time (default tasks.store.STREAM_ROWS, read at call time).
    text_rule is the tokenizer encode will use (default: words, lowercased), for the kept_text and token_length checks;
    tokenizer auto is resolved from train's words as encode resolves it.
    """
    text_rule = text_rule or TextRule()
    # GX's filesystem store wants an absolute base directory.
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir).resolve()
    severity = cfg.severity  # merged over the defaults, names checked, by ValidateConfig
    labels = _read_labels(ingest_dir)
    batch_rows = batch_rows or store.STREAM_ROWS
    frames, text_rule = _read_splits(ingest_dir, batch_rows, text_rule)
    train_hashes = frames["train"]["text_hash"].dropna()
    # A null test text is in train never (isin leaves a null hash False), as before with the texts.
    test_frame = frames["test"].assign(in_train=frames["test"]["text_hash"].isin(train_hashes).astype(bool))

    gx, gxe = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    context = _new_context(gx, out_dir / "data_docs")
    source = context.data_sources.add_pandas(name="reviews")
    rules = suite_rules(gxe, cfg, labels, severity, text_rule)
    test_rules = overlap_rules(gxe, cfg, severity)
    suite = _add_suite(gx, context, SUITE_NAME, rules)
    overlap_suite = _add_suite(gx, context, OVERLAP_SUITE_NAME, test_rules)
    run_id = RunIdentifier(run_name="rnnflow-validate")

    label_counts = {split: _label_counts(frames[split]["label"], labels) for split in SPLITS}
    checks: list[dict[str, Any]] = []
    gx_results: dict[str, Any] = {}
    for split in SPLITS:
        facts = _split_facts(frames[split], label_counts[split])
        result = _run(gx, context, source, split, suite, frames[split], run_id)
        gx_results[split] = result
        checks += _checks_from(result, rules, split, severity, facts)
    result = _run(gx, context, source, "test_vs_train", overlap_suite, test_frame[["text_hash", "in_train"]], run_id)
    gx_results["test_vs_train"] = result
    checks += _checks_from(result, test_rules, "test", severity, {})
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    make_offline(out_dir / "data_docs")

    failed_errors = [c["message"] for c in checks if not c["passed"] and c["severity"] == "error"]
    warnings = [c["message"] for c in checks if not c["passed"] and c["severity"] == "warning"]
    length_stats = {split: _length_stats(frames[split]["n_tokens"]) for split in SPLITS}
    kept = {split: _kept_stats(frames[split]["kept_share"]) for split in SPLITS}
    report = {
        "passed": not failed_errors,
        "checks": checks,
        "length_stats": length_stats,
        **text_rule.record(),  # length_unit, tokenizer, tokenizer_resolved, and for auto tokenizer_auto
        "kept_share": kept,
        "label_counts": label_counts,
        "warnings": warnings,
    }
    _write_reports(out_dir, report, [suite, overlap_suite], gx_results)

    logger = step_logger()
    for message in failed_errors:
        logger.error(message)
    for message in warnings:
        logger.warning(message)

    return {
        "passed": not failed_errors,
        "n_checks": len(checks),
        "n_failed_errors": len(failed_errors),
        "n_warnings": len(warnings),
        "errors": failed_errors[:SUMMARY_MESSAGES],
        "warnings": warnings[:SUMMARY_MESSAGES],
        "length_stats": length_stats,
        "length_unit": text_rule.length_unit,
        "tokenizer_resolved": text_rule.resolved,
        "kept_share": kept,
    }


def _write_reports(out_dir: Path, report: dict[str, Any], suites: list[Any], gx_results: dict[str, Any]) -> None:
    write_json(RunFiles.VALIDATION.of_step(out_dir), report)
    write_json(out_dir / "gx" / "suite.json", {suite.name: suite.to_json_dict() for suite in suites})
    write_json(out_dir / "gx" / "results.json", {name: result.to_json_dict() for name, result in gx_results.items()})
    if not (out_dir / "data_docs" / "index.html").is_file():
        raise RuntimeError(f"Great Expectations wrote no Data Docs index under {out_dir / 'data_docs'}.")


def first_error(summary: dict[str, Any]) -> str:
    """The one-sentence message of the first failed error-severity check in a validate summary."""
    errors = summary.get("errors") or []
    if not errors:
        raise ValueError("This validation summary has no failed error check.")
    return errors[0]


@step_task("validate", retries=0)
def validate_task(validate: ValidateConfig, *, ingest: StepOutput, text_rule: dict, slot: CacheSlot) -> StepOutput:
    """Data problems do not retry: the same data fails the same way. text_rule: encode's tokenizer and lowercase
    (and, for auto, its num_words and auto_min_coverage), as TextRule's fields (tasks/steps.py: text_rule)."""
    rule = TextRule(**text_rule)
    output = produce_step(slot, lambda out: validate_reviews(validate, ingest.path, out, text_rule=rule))
    if not output.summary["passed"]:
        raise DataValidationError(first_error(output.summary), output.path)
    return output
