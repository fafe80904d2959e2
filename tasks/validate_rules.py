"""The validate step's checks as Great Expectations expectations, and how each result reads as a sentence.

tasks/validate.py reduces every review to a few numbers (its module docstring lists them) and runs
these rules over them; each Rule pairs one GX expectation with the words that explain its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from tasks.config import EncodeConfig, ValidateConfig
from tasks.vocabulary_rule import TokenizerChoice, choose_tokenizer

# GX's own severity field, so Data Docs show which failures stop the run.
_GX_SEVERITY = {"error": "critical", "warning": "warning"}

# How a review's length is counted for each tokenizer encode may use: (the tasks.text rule that counts it, its unit).
# Subword pieces are learnt at encode, so they have no rule yet: they count characters, which pieces are made of
# (tasks/validate.py's module docstring says why). auto is one of word, char and subword, chosen from train's words.
LENGTH_UNITS = {
    "word": ("word", "words"),
    "char": ("char", "characters"),
    "subword": ("char", "characters"),
}
AUTO_CHOICES = ("word", "char", "subword")
_WHY_CHARACTERS = {"subword": "subword pieces are learnt at encode, from characters"}
# Unset keys mean what they mean in encode's section.
_ENCODE_DEFAULTS = EncodeConfig()


@dataclass(frozen=True)
class TextRule:
    """The part of the encode section validation reads: the tokenizer whose kept share and lengths it measures,
    and for tokenizer auto what encode chooses by (num_words, auto_min_coverage)."""

    tokenizer: str = "word"
    lowercase: bool = True
    num_words: int = _ENCODE_DEFAULTS.num_words
    auto_min_coverage: float = _ENCODE_DEFAULTS.auto_min_coverage
    analyzer: str = "none"  # encode.analyzer: what runs before the tokenizer (tasks/morphemes.py)
    auto_choice: TokenizerChoice | None = None  # what auto chose from train's words (resolve_auto), None before

    @property
    def candidates(self) -> tuple[str, ...]:
        """The tokenizers encode may use: auto's three until train's words have chosen, else the one."""
        return AUTO_CHOICES if self.tokenizer == "auto" and self.auto_choice is None else (self.resolved,)

    @property
    def resolved(self) -> str:
        """The tokenizer encode uses: auto's choice, or the tokenizer itself."""
        if self.tokenizer != "auto":
            return self.tokenizer
        if self.auto_choice is None:
            raise ValueError("Tokenizer auto is not resolved yet: count train's words and call TextRule.resolve_auto first.")
        return self.auto_choice.chosen

    def resolve_auto(self, word_counts: Mapping[str, int]) -> "TextRule":
        """This rule with auto's choice made from train's word counts, as encode makes it (tasks.vocabulary_rule)."""
        return replace(self, auto_choice=choose_tokenizer(word_counts, self.num_words, self.auto_min_coverage))

    def record(self) -> dict[str, Any]:
        """What validation.json says of the tokenizer; auto's choice as encode.json records it (same function, same words)."""
        auto = {"tokenizer_auto": self.auto_choice.record()} if self.auto_choice else {}
        analyzer = {"analyzer": self.analyzer} if self.analyzer != "none" else {}
        return {"length_unit": self.length_unit, "tokenizer": self.tokenizer, "tokenizer_resolved": self.resolved, **analyzer, **auto}

    @property
    def length_rule(self) -> str:
        """The tasks.text tokenizer that counts a review's length: word or char."""
        return LENGTH_UNITS[self.resolved][0]

    @property
    def length_unit(self) -> str:
        """What a review's length is counted in: words or characters."""
        return LENGTH_UNITS[self.resolved][1]

    def length(self, count: Any) -> str:
        """'1 word', '3 characters'."""
        return f"{count} {self.length_unit[:-1] if count == 1 else self.length_unit}"

    def length_phrase(self, count: Any) -> str:
        """The length, and why it is in these units when that is not plain (subword; auto's choice)."""
        why = _WHY_CHARACTERS.get(self.resolved)
        if self.tokenizer == "auto":
            why = f"tokenizer auto chose {self.resolved} tokens" + (f"; {why}" if why else "")
        return self.length(count) + (f" ({why})" if why else "")


@dataclass
class Rule:
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


def suite_rules(gxe: Any, cfg: ValidateConfig, labels: list[str], severity: dict[str, str], text_rule: TextRule) -> list[Rule]:
    """Every per-split rule, tagged with its key and severity."""
    rules = _presence_rules(gxe, labels) + _class_share_rules(gxe, cfg, labels) + _length_rules(gxe, cfg, text_rule)
    # kept_text before chars_per_token: text whose every review loses all its characters fails both, and kept_text says more.
    rules += _kept_and_duplicate_rules(gxe, cfg, text_rule) + _chars_per_token_rules(gxe, cfg, text_rule)
    for rule in rules:
        _tag(rule, severity)
    return rules


def _presence_rules(gxe: Any, labels: list[str]) -> list[Rule]:
    class_ids = list(range(len(labels)))
    names = ", ".join(f"{i}={name}" for i, name in enumerate(labels))
    return [
        Rule(
            "text_not_null", "not_blank",
            gxe.ExpectColumnValuesToNotBeNull(column="text_hash"),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} texts are missing (null)"),
            "drop or repair those rows at ingest",
        ),
        Rule(
            "text_not_blank", "not_blank",
            # text_chars is the stripped length, null for a null text (counted by the rule above, not here).
            gxe.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} texts are empty or whitespace only"),
            "drop or repair those rows at ingest",
        ),
        Rule(
            "label_not_null", "label_in_set",
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            "at most 0",
            lambda r: (_count_of(r), f"{_count_of(r)} of {_total(r)} labels are missing"),
            "drop or repair those rows at ingest",
        ),
        Rule(
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
    ]


def _class_share_rules(gxe: Any, cfg: ValidateConfig, labels: list[str]) -> list[Rule]:
    rules = [
        Rule(
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
            Rule(
                f"class_share:{name}", "class_balance",
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[class_id], mostly=min_share),
                f"at least {min_share:.2%} (validate.min_class_fraction x 2/{max(2, len(labels))} classes)",
                lambda r, name=name: (round(_share_in_set(r), 6), f"class {name} is {_share_in_set(r):.2%} of the reviews"),
                "split the reviews shuffled and stratified, or lower validate.min_class_fraction",
            )
        )
    return rules


def _length_rules(gxe: Any, cfg: ValidateConfig, text_rule: TextRule) -> list[Rule]:
    # n_tokens is counted in text_rule's length unit: the bounds, messages and Data Docs (description) say which.
    unit = text_rule.length_unit
    return [
        Rule(
            "shortest_review", "token_length",
            gxe.ExpectColumnMinToBeBetween(
                column="n_tokens", min_value=cfg.min_tokens,
                description=f"The shortest review (n_tokens, in {unit}) has at least {cfg.min_tokens} (validate.min_tokens).",
            ),
            f"at least {text_rule.length(cfg.min_tokens)} (validate.min_tokens)",
            lambda r: (int_or_none(r.get("observed_value")),
                       f"the shortest review has {text_rule.length_phrase(int_or_none(r.get('observed_value')))}"),
            "drop the too-short reviews at ingest or lower validate.min_tokens",
        ),
        Rule(
            "longest_review", "token_length",
            gxe.ExpectColumnMaxToBeBetween(
                column="n_tokens", max_value=cfg.max_tokens,
                description=f"The longest review (n_tokens, in {unit}) has at most {cfg.max_tokens} (validate.max_tokens).",
            ),
            f"at most {text_rule.length(cfg.max_tokens)} (validate.max_tokens)",
            lambda r: (int_or_none(r.get("observed_value")),
                       f"the longest review has {text_rule.length_phrase(int_or_none(r.get('observed_value')))}"),
            "drop the outliers at ingest or raise validate.max_tokens",
        ),
    ]


def _chars_per_token_rules(gxe: Any, cfg: ValidateConfig, text_rule: TextRule) -> list[Rule]:
    # Japanese without spaces under the word tokenizer: one or two "words" of dozens of characters a review, each
    # seen once, so no model learns from them (F1 0.0). Characters and subword pieces count about 1 here.
    unit, bound = text_rule.length_unit[:-1], cfg.max_chars_per_token

    def medians(result: dict, facts: dict) -> str | None:
        tokens, chars = facts.get("median_tokens"), facts.get("median_chars")
        if result.get("observed_value") is None and facts.get("any_tokens") is False:
            return f"no review of the split has a {unit}, so none has characters per {unit} to measure"
        if result.get("observed_value") is None or tokens is None or chars is None:
            return None
        if unit == "character":  # char and subword lengths are counted in characters: about 1 each, by construction
            return (f"the median review has {float(result['observed_value']):.1f} characters per character "
                    f"({text_rule.resolved} tokens are counted in characters here)")
        return (f"the median review has {float(result['observed_value']):.1f} characters per {unit}; reviews have a median of "
                f"{chars:g} characters and {text_rule.length_phrase(f'{tokens:g}')}")

    return [
        Rule(
            "chars_per_token", "chars_per_token",
            gxe.ExpectColumnMedianToBeBetween(
                column="chars_per_token", max_value=bound,
                description=f"The median review has at most {bound:g} characters per {unit} (chars_per_token; validate.max_chars_per_token).",
            ),
            f"at most {bound:g} characters per {unit} (validate.max_chars_per_token)",
            lambda r: (float_or_none(r.get("observed_value")),
                       f"the median review has {float_or_none(r.get('observed_value')) or 0:.1f} characters per {unit}"),
            f"the {text_rule.resolved} tokenizer hardly splits this text (as with languages written without spaces): "
            f"set encode.tokenizer to subword or char (--set encode.tokenizer=subword), or raise validate.max_chars_per_token "
            f"if the words are this long",
            describe_fact=medians,
        ),
    ]


def _kept_and_duplicate_rules(gxe: Any, cfg: ValidateConfig, text_rule: TextRule) -> list[Rule]:
    return [
        Rule(
            "kept_text", "kept_text",
            gxe.ExpectColumnMedianToBeBetween(column="kept_share", min_value=cfg.min_kept_share),
            f"at least {cfg.min_kept_share:.0%} (validate.min_kept_share)",
            lambda r: (float_or_none(r.get("observed_value")),
                       f"the median review keeps {float_or_none(r.get('observed_value')) or 0:.1%} of its non-space characters "
                       f"in {text_rule.resolved} tokens"),
            "set encode.tokenizer to subword or char (--set encode.tokenizer=subword)",
        ),
        Rule(
            "duplicate_texts", "duplicates",
            # Rounded so that a share exactly at the bound does not fail on float noise.
            # The text's 64-bit hash stands for the text (see tasks/validate.py's module docstring).
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="text_hash", min_value=round(1 - cfg.max_duplicate_fraction, 12)),
            f"at most {cfg.max_duplicate_fraction:.2%} (validate.max_duplicate_fraction)",
            lambda r: (_duplicate_share(r), f"{_duplicate_share(r):.2%} of texts repeat another text of the split"),
            "deduplicate the reviews at ingest or raise validate.max_duplicate_fraction",
        ),
    ]


def overlap_rules(gxe: Any, cfg: ValidateConfig, severity: dict[str, str]) -> list[Rule]:
    """The test-against-train rule, tagged."""
    # GX has no expectation across tables: pandas marks each test text whose hash is in train, GX checks the share.
    rule = Rule(
        "test_texts_in_train", "train_test_overlap",
        gxe.ExpectColumnMeanToBeBetween(column="in_train", max_value=cfg.max_train_test_overlap),
        f"at most {cfg.max_train_test_overlap:.2%} (validate.max_train_test_overlap)",
        lambda r: (float_or_none(r.get("observed_value")), f"{float_or_none(r.get('observed_value')) or 0:.2%} of test texts also appear in train"),
        "remove the shared reviews from test at ingest or raise validate.max_train_test_overlap",
    )
    _tag(rule, severity)
    return [rule]


def _tag(rule: Rule, severity: dict[str, str]) -> None:
    rule.expectation.meta = {"rule": rule.key, "check": rule.check}
    rule.expectation.severity = _GX_SEVERITY[severity[rule.check]]


def int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def float_or_none(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def _duplicate_share(result: dict) -> float:
    unique = result.get("observed_value")
    return round(1.0 - float(unique), 6) if unique is not None else 0.0
