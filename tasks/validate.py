"""Validate step: a Great Expectations suite over the ingested splits, a gate before encoding.

Every check a user can tune lives in ValidateConfig and is named in its `severity` map:

    not_blank           text is neither null nor whitespace only
    label_in_set        label is present and a class index listed in ingest.json
    class_balance       more than one class, and each class holds at least min_class_fraction
    token_length        shortest review >= min_tokens, longest <= max_tokens
    kept_text           the median review keeps >= min_kept_share of its non-space characters in tokens
    duplicates          share of repeated texts within a split <= max_duplicate_fraction
    train_test_overlap  share of test texts also in train <= max_train_test_overlap

All of them run as GX expectations, one batch per split, against one ephemeral context.
GX never sees the texts themselves. Each split is streamed from Parquet in record batches
(tasks.store.iter_parquet, STREAM_ROWS rows at a time) and every review is reduced on the way
to a few numbers, the columns GX checks:

    label        as ingested, nulls kept as nulls
    n_tokens     words after clean_text, as the word tokenizer counts them (a null text counts as "")
    kept_share   share of the text's non-space characters that end up in tokens (tasks.text.kept_shares;
                 encode.tokenizer's rule), null for a null or blank text
    text_chars   length of the stripped text (0: empty or whitespace only), null for a null text
    text_hash    64-bit hash of the raw text (pandas' hash_pandas_object), null for a null text

So memory holds one batch of text plus about 29 bytes per review (label 8, n_tokens 4,
kept_share 4, text_chars 4, text_hash 8 and its null flag 1), flat in the length of the texts,
and about 29 MB per million reviews in their number. The hash stands for the text in
the duplicates and train_test_overlap checks: two texts are "the same" when their hashes are;
with 2**64 values, the chance that any two of a million distinct reviews collide is about
3 in 100 million, so a false duplicate is negligible. Cross-split values ("this test review's
hash is in train") are computed with pandas on these columns and handed to GX as an extra
column, so every check lands in the same suite results and Data Docs. Length stats and label
counts come from the same columns. Files written to the step folder:

    validation.json   passed, checks, length_stats, kept_share, label_counts, warnings
    gx/suite.json     {suite name: GX expectation suite JSON}
    gx/results.json   {validation name: GX validation result JSON}
    data_docs/        GX Data Docs (index.html)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import ValidateConfig
from tasks import store
from tasks.store import SPLITS, RunFiles, StepOutput, iter_parquet, parquet_rows, read_json, write_json
from tasks.logs import step_logger
from tasks.text import clean_text, kept_shares, token_counts

REQUIRED_COLUMNS = ("text", "label")
SUITE_NAME = "reviews"
OVERLAP_SUITE_NAME = "reviews_test_vs_train"
DATA_DOCS_SITE = "rnnflow"
SUMMARY_MESSAGES = 5  # the summary travels in every StepOutput: keep it small

# GX's own severity field, so Data Docs show which failures stop the run.
_GX_SEVERITY = {"error": "critical", "warning": "warning"}


@dataclass(frozen=True)
class TextRule:
    """The part of the encode section validation reads: which tokenizer's kept share to measure."""

    tokenizer: str = "word"
    lowercase: bool = True


class DataValidationError(Exception):
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


def _read_split(ingest_dir: Path, split: str, batch_rows: int, text_rule: TextRule) -> pd.DataFrame:
    """One split as GX sees it: label, n_tokens, kept_share, text_chars, text_hash per review, streamed batch by batch.

    Only one batch of text is in memory at a time; the per-review arrays are preallocated from the footer's row count.
    """
    path, rows = _split_input(ingest_dir, split)
    n_tokens = np.zeros(rows, dtype=np.int32)
    kept_share = np.full(rows, np.nan, dtype=np.float32)
    text_chars = np.full(rows, np.nan, dtype=np.float32)
    text_hash = np.zeros(rows, dtype=np.uint64)
    text_null = np.ones(rows, dtype=bool)
    labels = []
    start = 0
    for batch in iter_parquet(path, columns=list(REQUIRED_COLUMNS), batch_rows=batch_rows):
        stop = start + len(batch)
        texts = batch["text"]
        # Tags such as <br /> are not words: count tokens the way encoding will see them.
        cleaned = [clean_text(t) for t in texts.fillna("").astype(str)]
        n_tokens[start:stop] = token_counts(cleaned)
        kept_share[start:stop] = kept_shares(cleaned, text_rule.lowercase, text_rule.tokenizer)
        text_chars[start:stop] = texts.str.strip().str.len().to_numpy(dtype=np.float32, na_value=np.nan)
        text_hash[start:stop] = pd.util.hash_pandas_object(texts, index=False).to_numpy()
        text_null[start:stop] = texts.isna().to_numpy()
        labels.append(batch["label"].reset_index(drop=True))
        start = stop
    return pd.DataFrame(
        {
            "label": pd.concat(labels, ignore_index=True),
            "n_tokens": n_tokens,
            "kept_share": kept_share,
            "text_chars": text_chars,
            "text_hash": pd.arrays.IntegerArray(text_hash, text_null),  # UInt64 with nulls where the text is null
        }
    )


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


# --------------------------------------------------------------------------- rules


@dataclass
class _Rule:
    """One GX expectation and how to read its result as a check a user understands."""

    key: str  # unique within a suite; carried in the expectation's meta to find its result
    check: str
    expectation: Any
    bound: str
    observe: Callable[[dict], tuple[Any, str]]  # GX result dict -> (observed value, what was seen)
    fix: str
    describe_fact: Callable[[dict, dict], str | None] | None = None  # (result, split facts) -> a more telling phrase


def _count_of(result: dict) -> int:
    return int(result.get("unexpected_count") or 0)


def _total(result: dict) -> int:
    return int(result.get("element_count") or 0)


def _share_in_set(result: dict) -> float:
    present = _total(result) - int(result.get("missing_count") or 0)
    return 1.0 - _count_of(result) / present if present else 0.0


def _suite_rules(gxe: Any, cfg: ValidateConfig, labels: list[str], severity: dict[str, str], text_rule: TextRule) -> list[_Rule]:
    class_ids = list(range(len(labels)))
    names = ", ".join(f"{i}={name}" for i, name in enumerate(labels))
    rules = [
        _Rule(
            "text_not_null", "not_blank",
            gxe.ExpectColumnValuesToNotBeNull(column="text_hash"),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} texts are missing (null)"),
            "drop or repair those rows at ingest",
        ),
        _Rule(
            "text_not_blank", "not_blank",
            # text_chars is the stripped length, null for a null text (counted by the rule above, not here).
            gxe.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} texts are empty or whitespace only"),
            "drop or repair those rows at ingest",
        ),
        _Rule(
            "label_not_null", "label_in_set",
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} labels are missing"),
            "drop or repair those rows at ingest",
        ),
        _Rule(
            "label_in_set", "label_in_set",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=class_ids),
            f"each in {{{', '.join(map(str, class_ids))}}}",
            lambda r: (
                _count_of(r),
                f"{_count_of(r)} of {_total(r)} labels are not a class index of ingest.json ({names})"
                + (f", e.g. {', '.join(map(str, r.get('partial_unexpected_list', [])[:3]))}" if _count_of(r) else ""),
            ),
            "fix the labels at ingest or list every class in ingest.json's labels",
        ),
        _Rule(
            "more_than_one_class", "class_balance",
            gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2),
            "at least 2 classes",
            lambda r: (int(r.get("observed_value") or 0), f"{int(r.get('observed_value') or 0)} distinct classes are present"),
            "split the reviews shuffled and stratified so every split holds every class",
            describe_fact=lambda r, facts: (
                f"only one class is present ({facts['classes_present']})" if (r.get("observed_value") or 0) < 2 else None
            ),
        ),
    ]
    # min_class_fraction is stated for two classes; with N classes an even share is 1/N, so the
    # bound scales by 2/N (0.3 for two classes, 0.15 for four, 0.06 for ten stars).
    min_share = cfg.min_class_fraction * 2 / max(2, len(labels))
    for class_id, name in enumerate(labels):
        # "at least min_share of labels are this class" is GX's `mostly` on a one-value set.
        rules.append(
            _Rule(
                f"class_share:{name}", "class_balance",
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[class_id], mostly=min_share),
                f"at least {min_share:.2%} (validate.min_class_fraction x 2/{max(2, len(labels))} classes)",
                lambda r, name=name: (round(_share_in_set(r), 6), f"class {name} is {_share_in_set(r):.2%} of the reviews"),
                "split the reviews shuffled and stratified, or lower validate.min_class_fraction",
            )
        )
    rules += [
        _Rule(
            "shortest_review", "token_length",
            gxe.ExpectColumnMinToBeBetween(column="n_tokens", min_value=cfg.min_tokens),
            f"at least {cfg.min_tokens} tokens (validate.min_tokens)",
            lambda r: (_int_or_none(r.get("observed_value")), f"the shortest review has {_int_or_none(r.get('observed_value'))} tokens"),
            "drop the too-short reviews at ingest or lower validate.min_tokens",
        ),
        _Rule(
            "longest_review", "token_length",
            gxe.ExpectColumnMaxToBeBetween(column="n_tokens", max_value=cfg.max_tokens),
            f"at most {cfg.max_tokens} tokens (validate.max_tokens)",
            lambda r: (_int_or_none(r.get("observed_value")), f"the longest review has {_int_or_none(r.get('observed_value'))} tokens"),
            "drop the outliers at ingest or raise validate.max_tokens",
        ),
        _Rule(
            "kept_text", "kept_text",
            gxe.ExpectColumnMedianToBeBetween(column="kept_share", min_value=cfg.min_kept_share),
            f"at least {cfg.min_kept_share:.0%} (validate.min_kept_share)",
            lambda r: (_float_or_none(r.get("observed_value")),
                       f"the median review keeps {_float_or_none(r.get('observed_value')) or 0:.1%} of its non-space characters "
                       f"in {text_rule.tokenizer} tokens"),
            "set encode.tokenizer to subword or char (--set encode.tokenizer=subword)",
        ),
        _Rule(
            "duplicate_texts", "duplicates",
            # Rounded so that a share exactly at the bound does not fail on float noise.
            # The text's 64-bit hash stands for the text (see the module docstring).
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="text_hash", min_value=round(1 - cfg.max_duplicate_fraction, 12)),
            f"at most {cfg.max_duplicate_fraction:.2%} (validate.max_duplicate_fraction)",
            lambda r: (_duplicate_share(r), f"{_duplicate_share(r):.2%} of texts repeat another text of the split"),
            "deduplicate the reviews at ingest or raise validate.max_duplicate_fraction",
        ),
    ]
    for rule in rules:
        _tag(rule, severity)
    return rules


def _overlap_rules(gxe: Any, cfg: ValidateConfig, severity: dict[str, str]) -> list[_Rule]:
    # GX has no expectation across tables: pandas marks each test text whose hash is in train, GX checks the share.
    rule = _Rule(
        "test_texts_in_train", "train_test_overlap",
        gxe.ExpectColumnMeanToBeBetween(column="in_train", max_value=cfg.max_train_test_overlap),
        f"at most {cfg.max_train_test_overlap:.2%} (validate.max_train_test_overlap)",
        lambda r: (_float_or_none(r.get("observed_value")), f"{_float_or_none(r.get('observed_value')) or 0:.2%} of test texts also appear in train"),
        "remove the shared reviews from test at ingest or raise validate.max_train_test_overlap",
    )
    _tag(rule, severity)
    return [rule]


def _tag(rule: _Rule, severity: dict[str, str]) -> None:
    rule.expectation.meta = {"rule": rule.key, "check": rule.check}
    rule.expectation.severity = _GX_SEVERITY[severity[rule.check]]


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def _duplicate_share(result: dict) -> float:
    unique = result.get("observed_value")
    return round(1.0 - float(unique), 6) if unique is not None else 0.0


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


def _add_suite(gx: Any, context: Any, name: str, rules: list[_Rule]) -> Any:
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for rule in rules:
        suite.add_expectation(rule.expectation)
    return suite


def _run(gx: Any, context: Any, source: Any, name: str, suite: Any, frame: pd.DataFrame, run_id: Any) -> Any:
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY", run_id=run_id)


def _checks_from(result: Any, rules: list[_Rule], split: str, severity: dict[str, str], facts: dict) -> list[dict[str, Any]]:
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
    text_rule is the tokenizer encode will use (default: words, lowercased), for the kept_text check.
    """
    text_rule = text_rule or TextRule()
    # GX's filesystem store wants an absolute base directory.
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir).resolve()
    severity = cfg.severity  # merged over the defaults, names checked, by ValidateConfig
    labels = _read_labels(ingest_dir)
    batch_rows = batch_rows or store.STREAM_ROWS
    frames = {split: _read_split(ingest_dir, split, batch_rows, text_rule) for split in SPLITS}
    train_hashes = frames["train"]["text_hash"].dropna()
    # A null test text is in train never (isin leaves a null hash False), as before with the texts.
    test_frame = frames["test"].assign(in_train=frames["test"]["text_hash"].isin(train_hashes).astype(bool))

    gx, gxe = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    context = _new_context(gx, out_dir / "data_docs")
    source = context.data_sources.add_pandas(name="reviews")
    rules = _suite_rules(gxe, cfg, labels, severity, text_rule)
    overlap_rules = _overlap_rules(gxe, cfg, severity)
    suite = _add_suite(gx, context, SUITE_NAME, rules)
    overlap_suite = _add_suite(gx, context, OVERLAP_SUITE_NAME, overlap_rules)
    run_id = RunIdentifier(run_name="rnnflow-validate")

    label_counts = {split: _label_counts(frames[split]["label"], labels) for split in SPLITS}
    checks: list[dict[str, Any]] = []
    gx_results: dict[str, Any] = {}
    for split in SPLITS:
        facts = {"classes_present": ", ".join(name for name, n in label_counts[split].items() if n) or "none"}
        result = _run(gx, context, source, split, suite, frames[split], run_id)
        gx_results[split] = result
        checks += _checks_from(result, rules, split, severity, facts)
    result = _run(gx, context, source, "test_vs_train", overlap_suite, test_frame[["text_hash", "in_train"]], run_id)
    gx_results["test_vs_train"] = result
    checks += _checks_from(result, overlap_rules, "test", severity, {})
    context.build_data_docs(site_names=[DATA_DOCS_SITE])

    failed_errors = [c["message"] for c in checks if not c["passed"] and c["severity"] == "error"]
    warnings = [c["message"] for c in checks if not c["passed"] and c["severity"] == "warning"]
    length_stats = {split: _length_stats(frames[split]["n_tokens"]) for split in SPLITS}
    kept = {split: _kept_stats(frames[split]["kept_share"]) for split in SPLITS}
    report = {
        "passed": not failed_errors,
        "checks": checks,
        "length_stats": length_stats,
        "tokenizer": text_rule.tokenizer,
        "kept_share": kept,
        "label_counts": label_counts,
        "warnings": warnings,
    }
    write_json(RunFiles.VALIDATION.of_step(out_dir), report)
    write_json(out_dir / "gx" / "suite.json", {s.name: s.to_json_dict() for s in (suite, overlap_suite)})
    write_json(out_dir / "gx" / "results.json", {name: r.to_json_dict() for name, r in gx_results.items()})
    if not (out_dir / "data_docs" / "index.html").is_file():
        raise RuntimeError(f"Great Expectations wrote no Data Docs index under {out_dir / 'data_docs'}.")

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
        "kept_share": kept,
    }


def first_error(summary: dict[str, Any]) -> str:
    """The one-sentence message of the first failed error-severity check in a validate summary."""
    errors = summary.get("errors") or []
    if not errors:
        raise ValueError("This validation summary has no failed error check.")
    return errors[0]


@task(name="validate", cache_policy=StepCachePolicy(step="validate"), retries=0)
def validate_task(root: str, section: dict, upstream: dict, text_rule: dict | None = None) -> StepOutput:
    """Data problems do not retry: the same data fails the same way. text_rule: encode's tokenizer and lowercase."""
    rule = TextRule(**(text_rule or {}))
    output = produce_step(root, "validate", section, upstream,
                          lambda out: validate_reviews(ValidateConfig(**section), upstream["ingest"].path, out, text_rule=rule),
                          **({"text_rule": text_rule} if text_rule else {}))
    if not output.summary["passed"]:
        raise DataValidationError(first_error(output.summary), output.path)
    return output
