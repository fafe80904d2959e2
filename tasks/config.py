"""The one configuration object: defaults, then a preset or YAML file, then --set overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.architectures import CELL_NAMES, DEFAULT_CELL, INPUT_NAMES, TASK_NAMES, TASKS_DESCRIPTION
from tasks.baseline_config import BaselineConfig
from tasks.config_keys import SPEED_ONLY_KEYS, key_config  # noqa: F401  (imported from here by the steps)
from tasks.config_reporting import NotifyConfig, TrackConfig
from tasks.config_section import Section, section_dump
from tasks.data_config import IMDB_URL, DataConfig  # noqa: F401  (imported from here)
from tasks.errors import RnnflowError
from tasks.score_config import ScoreConfig
from tasks.spelling import did_you_mean, key_suggestion
from tasks.yaml_keys import DuplicateKeyError, parse_value, safe_load_unique

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(RnnflowError, ValueError):
    """A configuration the user must fix: the message is one sentence that says how."""


# A test split that overlaps train flatters every test figure, so that warning keeps a run from becoming champion;
# short or long reviews and repeated texts are facts about the data to look at, not reasons to distrust the model.
BLOCKING_WARNINGS = ("train_test_overlap",)

DEFAULT_SEVERITY = {"not_blank": "error", "label_in_set": "error", "class_balance": "error", "token_length": "warning", "kept_text": "error",
                    "chars_per_token": "error", "duplicates": "warning", "train_test_overlap": "warning"}


class ValidateConfig(Section):
    min_class_fraction: float = Field(default=0.3, ge=0, le=0.5, description="smallest share a class may have (two classes; scaled by 2/N for N)")
    min_tokens: int = Field(default=1, ge=0, description="shortest allowed review, in tokens")
    max_tokens: int = Field(default=5000, ge=1, description="longest allowed review, in tokens")
    min_kept_share: float = Field(
        default=0.5, ge=0, le=1,
        description="least median share of a review's non-space characters that the tokenizer keeps in its tokens",
    )
    max_chars_per_token: float = Field(
        default=12, gt=0,
        description="most characters per token in the median review, tokens in the run's tokenizer units: more means the tokenizer "
        "hardly splits the text (Japanese or Chinese without spaces under the word tokenizer: one or two words per review)",
    )
    max_duplicate_fraction: float = Field(default=0.02, ge=0, le=1, description="most share of repeated texts within a split")
    max_train_test_overlap: float = Field(default=0.01, ge=0, le=1, description="most share of test texts also in train")
    severity: dict[str, Literal["error", "warning"]] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITY),
        description="check -> error (stops the run) or warning (shown; blocks promotion if in promote.blocking_warnings); e.g. validate.severity.duplicates=error",
    )

    @field_validator("severity")
    @classmethod
    def _known_checks_over_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        """--set validate.severity.duplicates=error changes one check and keeps the others' defaults."""
        unknown = sorted(set(value) - set(DEFAULT_SEVERITY))
        if unknown:
            raise ValueError(f"unknown check {unknown[0]!r}; the checks are {', '.join(DEFAULT_SEVERITY)}")
        return {**DEFAULT_SEVERITY, **value}


class EncodeConfig(Section):
    tokenizer: Literal["word", "char", "subword", "auto"] = Field(
        default="word",
        description="word: words of any script; char: every character; subword: SentencePiece pieces learnt from train; "
        "auto: word when num_words words cover auto_min_coverage of train's words, else char for Hangul, kana or CJK, else subword",
    )
    analyzer: Literal["none", "kiwi"] = Field(
        default="none",
        description="none: the tokenizer reads the text; kiwi: Korean morphemes first (kiwipiepy, the korean extra), which the tokenizer "
        "then reads as words or subword pieces (see docs/korean.md)",
    )
    auto_min_coverage: float = Field(
        default=0.75, gt=0, le=1,
        description="tokenizer auto: the least share of train's word tokens that the num_words most frequent words must cover for words to be used",
    )
    num_words: int = Field(default=20000, ge=4, description="vocabulary size (words, characters or subword pieces), reserved ids included")
    max_len: int | Literal["auto"] = Field(default="auto", description="tokens kept per review; auto: max_len_percentile of train's lengths")
    max_len_percentile: float = Field(default=90, gt=0, le=100, description="max_len auto: this percentile of train's review lengths")
    padding: Literal["pre", "post"] = Field(default="post", description="the side short reviews are padded on")
    truncating: Literal["pre", "post"] = Field(default="pre", description="the side long reviews are cut on (pre: their start)")
    lowercase: bool = Field(default=True, description="lowercase texts before tokenizing")

    @field_validator("max_len")
    @classmethod
    def _positive_max_len(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("max_len must be a positive number of tokens or 'auto'")
        return value


class ModelConfig(Section):
    # The choices of task, cell, stack_cells and input are the model registry's names (tasks/architectures.py).
    task: Literal[TASK_NAMES] = Field(default="classify", description=TASKS_DESCRIPTION)
    cell: Literal[CELL_NAMES] = Field(default=DEFAULT_CELL, description="the recurrent cell")
    units: int = Field(default=64, ge=1, description="units per recurrent layer")
    layers: int = Field(default=1, ge=1, description="recurrent layers stacked")
    stack_cells: list[Literal[CELL_NAMES]] | None = Field(default=None, description="a cell per layer, e.g. [gru, simple_rnn]; overrides cell and layers")
    stack_units: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, description="with stack_cells: units per layer, e.g. [256, 128]")
    bidirectional: bool = Field(default=True, description="read each text both ways")
    input: Literal[INPUT_NAMES] = Field(default="embedding", description="learnt embeddings, or one-hot vectors of num_words")
    embedding_dim: int = Field(default=64, ge=1, description="size of the learnt embeddings")
    mask_padding: bool = Field(default=True, description="the recurrence skips padding (Keras masking)")
    word_dropout: float = Field(default=0.0, ge=0, lt=1, description="rate at which whole input words are dropped while training")
    embedding_dropout: float = Field(default=0.0, ge=0, lt=1, description="SpatialDropout1D rate: whole vector dimensions dropped at every step")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each recurrent layer")
    pooling: Literal["last", "mean", "max"] = Field(default="last", description="the last state, or the mean/max over the real steps")
    dense_units: int = Field(default=0, ge=0, description="units of a hidden dense layer before the output (0: none)")
    num_words: int | None = Field(
        default=None, ge=4,
        description="read only the N most frequent ids of encode's vocabulary, the others as out-of-vocabulary (what encode.num_words N gives); null: all",
    )
    window: int | None = Field(
        default=None, ge=1,
        description="read only this many tokens of each encoded row, from the end or the start of its text (window_at); null: the whole row",
    )
    window_at: Literal["end", "start"] = Field(default="end", description="where model.window sits in each text: its last or its first tokens")
    ngrams: int = Field(
        default=0, ge=0, le=5,
        description="classify: beside the recurrence, a bag of each row's token 1..N-grams with learnt weights, its logits added to the "
        "recurrent ones (Johnson & Zhang's seq2-bown; docs/experiments.md); 0: none",
    )
    ngram_buckets: int = Field(default=2**21, ge=1024, description="with model.ngrams 2 or more: table rows the 2..N-grams are hashed into")
    ngram_rate: float = Field(
        default=10.0, gt=0, le=100,
        description="with model.ngrams: the bag's learning rate as a multiple of train.learning_rate (its weights are scaled by it)",
    )
    ngram_drop: float = Field(
        default=0.0, ge=0, lt=1, description="with model.ngrams: the fraction of training rows whose bag is left out, so the recurrence beside it "
        "learns to classify alone too (never in inference); 0: none",
    )
    ngram_start: Literal["naive_bayes", "logistic", "zeros"] = Field(
        default="naive_bayes", description="with model.ngrams: where the bag's weights start, Naive Bayes' log-count ratios on the training rows "
        "(NBSVM's r), a logistic regression on the bag's n-grams weighted by them (NBSVM; docs/experiments.md), or zeros",
    )
    ngram_c: Annotated[list[Annotated[float, Field(gt=0)]], BeforeValidator(lambda v: [v] if isinstance(v, int | float) else v)] = Field(
        default_factory=lambda: [1.0, 10.0, 100.0], min_length=1, description="with model.ngram_start logistic: the regression's inverse L2 "
        "strengths tried (scikit-learn's C); the one with the best accuracy on the member's val rows is kept (train.json's bag_starts)",
    )

class TrainConfig(Section):
    optimizer: Literal["adam", "rmsprop", "sgd"] = Field(default="adam", description="the Keras optimizer")
    learning_rate: float = Field(default=1e-3, ge=0, description="the optimizer's learning rate")
    batch_size: int = Field(default=64, ge=1, description="reviews per batch")
    # The upper bounds catch a typo (an extra few zeros) at load time instead of a run that never ends.
    epochs: int = Field(default=4, ge=1, le=10_000, description="most epochs (early stopping may end sooner)")
    monitor: Literal["val_loss", "val_accuracy"] = Field(
        default="val_loss",
        description="the figure early stopping, train.lr_drop and the kept epoch follow: the lowest val_loss, or the highest "
        "val_accuracy (with a bag of n-grams accuracy peaks epochs before the loss stops falling; docs/experiments.md)",
    )
    patience: int = Field(default=1, ge=0, description="epochs without a better train.monitor before early stopping ends training and keeps the best weights")
    lr_drop: float = Field(
        default=0, ge=0, lt=1,
        description="after an epoch that does not better train.monitor, multiply the learning rate by this (0: keep the rate)",
    )
    seed: int = Field(default=1337, description="seed of the weights and the batch order")
    members: int = Field(
        default=1, ge=1, le=100,
        description="classifiers trained, each with its own seed and validation block; model.keras averages their probabilities",
    )
    member_models: list[dict[str, Any]] = Field(
        default_factory=list,
        description="model keys changed per member, taken in turn (member k gets entry k mod the list's length): members that read differently",
    )
    in_memory_max_mb: float = Field(
        default=1024, ge=0,
        description="train arrays larger than this (MiB) are read batch by batch, memory-mapped through tf.data, instead of handed to Keras whole",
    )
    bucket_by_length: bool = Field(
        default=True,
        description="batches of reviews of similar length, each padded (right) only to its longest review rounded up to a multiple of 32, "
        "not to encode.max_len; models whose padding is masked (model.mask_padding) and next_token models; false: every batch max_len wide",
    )
    jit_compile: Literal["auto", True, False] = Field(
        default="auto",
        description="XLA for the train step (model.compile's jit_compile): auto is Keras' choice (off on a CPU); true compiles each batch "
        "shape once (tens of seconds per model) for faster epochs after (docs/training-speed.md)",
    )
    member_processes: int | Literal["auto"] = Field(
        default="auto",
        description="processes that fit train.members side by side, each with its share of the CPU threads: auto is one per core "
        "(at most one per member; 1 with a GPU or inside a Dask worker); 1 fits them one after another in the step's own process. "
        "Speed, not the model asked for: not part of the train step's cache key",
    )

    @field_validator("member_processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        # One check for both kinds, so a wrong value gets one message rather than one per member of the union.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256):
            return value
        raise ValueError("should be auto or a whole number of processes from 1 to 256")
    deterministic: bool = Field(
        default=False,
        description="TensorFlow's op determinism (tf.config.experimental.enable_op_determinism): a retrained run repeats its figures "
        "to the last digit on one machine, at some speed",
    )
    tensorboard: bool = Field(default=False, description="write Keras' TensorBoard events into train/tensorboard/ (a folder per member); "
                              "needs the tensorboard extra, whose `tensorboard --logdir` opens them")
    fused_input: bool = Field(default=True, description="GRU/LSTM take their input product out of the time loop (tasks/fused_rnn.py): "
                              "the same model, faster on a CPU (a GPU keeps cuDNN); false: Keras' own layers")
    refit: Literal["auto", True, False] = Field(
        default=False, description="fit each member again from its start on its training and val rows together, for the epochs its first "
        "fit kept, at their learning rates, its bag at the C its val rows chose: the model saved; val figures stay the first fit's; "
        "auto: where encode reads characters",
    )


def member_changes(train: TrainConfig, k: int) -> dict[str, Any]:
    """train.member_models' entry for member k (from 0), taken in turn; {} when there are none."""
    return train.member_models[k % len(train.member_models)] if train.member_models else {}


def member_model(model: ModelConfig, train: TrainConfig, k: int) -> ModelConfig:
    """The model section member k (from 0) trains: model, with member_changes laid over it."""
    return ModelConfig(**{**model.model_dump(), **member_changes(train, k)})


# The keys of metrics.json's "test" block that a promotion can be judged on ("n" is a count, not a score).
PromoteMetric = Literal["accuracy", "loss", "precision", "recall", "f1", "roc_auc"]


class PromoteConfig(Section):
    enabled: bool = Field(default=True, description="compare each run with the champion and promote it when better")
    model: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the model a run competes for: only its champion is compared; null: derived from the data keys, as "
        "'rnnflow config' prints",
    )
    blocking_warnings: list[str] = Field(
        default_factory=lambda: list(BLOCKING_WARNINGS),
        description="validation checks whose failed warning keeps a run from promotion (a failed error stops the run anyway); "
        "the other warnings are shown in the report and the decision but do not block",
    )
    metric: PromoteMetric = Field(default="accuracy", description="the test metric that decides; loss counts lower as better")
    min_delta: float = Field(default=0.0, ge=0, description="promote only when new > champion + min_delta (new < champion - min_delta for loss)")
    floors: dict[PromoteMetric, float] = Field(default_factory=dict, description="metric -> the least the new run must reach (the most, for loss)")
    beat_baseline: bool = Field(default=False, description="promote only a model that beats the run's linear baseline on promote.metric")

    @field_validator("blocking_warnings")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DEFAULT_SEVERITY))
        if unknown:
            raise ValueError(f"unknown check {unknown[0]!r}; the checks are {', '.join(DEFAULT_SEVERITY)}")
        return sorted(set(value), key=list(DEFAULT_SEVERITY).index)


class ServeConfig(Section):
    """rnnflow serve-model's limits and champion check; no step reads these."""

    max_texts: int = Field(default=256, ge=1, description="serve-model: most texts one POST /predict may carry; more are refused with 413")
    max_text_bytes: int = Field(default=100_000, ge=1, description="serve-model: most UTF-8 bytes of one text in POST /predict; a longer one is refused with 413")
    check_seconds: float = Field(default=5.0, ge=0, description="serve-model: how often, at most, champion.json is read to pick up a new champion")


class RunConfig(Section):
    preset: str = Field(default="default", description="the preset the configuration started from (set by --preset)")
    data: DataConfig = Field(default_factory=DataConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)  # where a run reports (tasks/config_reporting.py)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data, the part of the configuration a step's cache key covers.

        Retry settings change how hard a step tries, not what it produces: they stay out.
        """
        return section_dump(name, getattr(self, "validate_" if name == "validate" else name))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def model_name(self) -> str:
        """The model this run competes for: promote.model, or one derived from the data keys (see derived_model_name)."""
        return self.promote.model or derived_model_name(self.data, self.model.task)

    @model_validator(mode="after")
    def _member_models_fit(self) -> "RunConfig":
        """Each train.member_models entry, laid over model, must be a model section itself, and a classifier."""
        for number, changes in enumerate(self.train.member_models, start=1):
            if not changes:
                raise ValueError(f"train.member_models entry {number} changes nothing: give it model keys, for example {{window_at: start}}")
            if "task" in changes:
                raise ValueError(f"train.member_models entry {number} changes model.task, which every member shares: leave task out of it")
            try:
                member_model(self.model, self.train, number - 1)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                problem = "is not a model key" if first["type"] == "extra_forbidden" else f"is invalid ({first['msg']}, got {first.get('input')!r})"
                raise ValueError(f"train.member_models entry {number}: model.{key} {problem}; fix that entry") from None
        return self

    @model_validator(mode="after")
    def _stack_sizes_fit(self) -> "RunConfig":
        """model.stack_units gives one size per layer of model.stack_cells (the model's own and each member's), so a
        mismatch is refused here, with the keys named, not by train after ingest, validate and encode have run."""
        members = [member_model(self.model, self.train, k) for k in range(len(self.train.member_models))]
        for entry, model in [(0, self.model), *enumerate(members, start=1)]:
            cells, units = model.stack_cells, model.stack_units
            if cells and units and len(cells) != len(units):
                sizes = ",".join([str(units[0])] * len(cells))
                where, fix = (f" in train.member_models entry {entry}", f"stack_units: [{sizes}] in that entry") if entry else ("", f"--set model.stack_units=[{sizes}]")
                raise ValueError(
                    f"model.stack_cells lists {len(cells)} layers ({', '.join(cells)}) but model.stack_units gives {len(units)} "
                    f"size{'s' if len(units) != 1 else ''} ({', '.join(map(str, units))}){where}: give one size per layer, "
                    f"e.g. {fix}, or leave model.stack_units out (every layer then gets model.units)"
                )
        return self

    @model_validator(mode="after")
    def _next_token_fits(self) -> "RunConfig":
        """model.task next_token reads text one character at a time, left to right: the rules that follow from it."""
        if self.model.task != "next_token":
            return self
        # A word model could be trained the same way, but generate would have to guess how to join
        # words back into text (spaces, punctuation dropped by the word rule): characters only.
        if self.encode.tokenizer != "char":
            raise ValueError(
                f"model.task next_token predicts the next character and needs encode.tokenizer char, not {self.encode.tokenizer}: "
                "add --set encode.tokenizer=char or start from --preset seed-char-next"
            )
        if self.model.bidirectional:
            raise ValueError(
                "model.task next_token predicts each character from the ones before it, and a bidirectional layer would read "
                "the answer from the right: add --set model.bidirectional=false"
            )
        if self.model.pooling != "last":
            raise ValueError(
                f"model.task next_token predicts at every step and pools nothing, so model.pooling {self.model.pooling} does not apply: "
                "leave it at last"
            )
        if self.model.num_words:
            raise ValueError(
                "model.task next_token predicts a character from the whole vocabulary, so model.num_words does not apply: "
                "leave it at null (encode.num_words sets the vocabulary)"
            )
        if self.model.window:
            raise ValueError(
                "model.task next_token predicts at every step of the whole text, so model.window does not apply: leave it at null"
            )
        if self.model.ngrams:
            raise ValueError(
                "model.task next_token predicts at every step, and a bag of the whole text's n-grams would read the answer: "
                "leave model.ngrams at 0"
            )
        if self.train.members > 1:
            raise ValueError(
                f"model.task next_token trains one model that generate continues texts with, so train.members {self.train.members} "
                "does not apply: leave it at 1"
            )
        return self


_INPUT_SUFFIXES = (".gz", ".tgz", ".tar", ".zip", ".bz2", ".xz", ".zst", ".csv", ".tsv", ".parquet", ".jsonl", ".json", ".npz", ".txt")


def derived_model_name(data: DataConfig, task: str = "classify") -> str:
    """promote.model's default, from what the data is: source, input name, the label column when not 'label', the task.

    Two tables of other languages or products get two models (and two champions) in one artifacts root;
    reruns of one input with other model settings compete for the same one. "imdb-aclImdb_v1", "table-ko_reviews_train".
    """
    if data.source == "synthetic":
        parts = ["synthetic"]
    else:
        name = data.path.rstrip("/").rsplit("/", 1)[-1]
        while any(name.lower().endswith(suffix) for suffix in _INPUT_SUFFIXES):
            name = name[: name.rfind(".")]
        parts = [data.source, name or "input"]
    if data.source == "table" and data.label_column != "label":
        parts.append(data.label_column)
    if task != "classify":
        parts.append(task.replace("_", "-"))
    text = "-".join(parts)
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text).strip("._-")
    return (cleaned or "model")[:100]


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_description(name: str) -> str:
    text = (PRESETS_DIR / f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = safe_load_unique(path.read_text())
    except DuplicateKeyError as err:
        first, second = err.lines
        raise ConfigError(f"Configuration file {path} gives the key {err.key!r} twice (lines {first} and {second}): keep one of them.") from None
    except FileNotFoundError:
        raise ConfigError(f"Configuration file {path} does not exist: check the path given to --config.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"Configuration file {path} is not valid YAML{where}: fix its syntax.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Configuration file {path} must hold a mapping of sections (data, encode, ...), not a {type(loaded).__name__}.")
    return loaded


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like section.key=value, for example --set train.epochs=3.")
    dotted, raw = item.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if len(keys) < 2:
        raise ConfigError(f"--set {item!r} must name a section and a key, for example --set train.epochs=3.")
    try:
        value = parse_value(raw)
    except DuplicateKeyError as err:
        raise ConfigError(f"--set {'.'.join(keys)} gives the key {'.'.join([*keys, err.key])!r} twice: keep one of them.") from None
    return keys, value


def _describe_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    if not first["loc"]:  # a rule across sections (RunConfig's own validators): its message names the keys
        return f"The configuration from {origin} does not hold together: {first['msg'].removeprefix('Value error, ')}."
    where = ".".join(str(p) for p in first["loc"]).replace("validate_", "validate")
    if first["type"] == "extra_forbidden":
        return f"Unknown configuration key {where!r} in {origin}{key_suggestion(RunConfig, first['loc'])}: check its spelling against docs/configuration.md (every key)."
    message, given = first["msg"].removeprefix("Value error, "), "" if where == "notify.webhook" else f", got {first.get('input')!r}"
    return f"Configuration key {where!r} in {origin} is invalid ({message}{given}): fix the value."


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Build the run configuration from defaults, a preset or YAML file, and --set overrides, in that order.

    base (a recorded run's whole configuration) replaces the defaults and the preset, for
    rerunning a step of that run with a few keys changed.
    """
    layers: list[tuple[str, dict[str, Any]]] = [("the recorded run's configuration", base)] if base else []
    if preset is None and config_file is None and base is None:
        preset = "default"
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.exists():
            raise ConfigError(f"Unknown preset {preset!r}{did_you_mean(preset, preset_names())}: choose one of {', '.join(preset_names())} (rnnflow presets lists them).")
        layers.append((f"preset {preset}", {"preset": preset, **_read_yaml(path)}))
    if config_file:
        layers.append((f"config file {config_file}", _read_yaml(Path(config_file))))
    set_values: dict[str, Any] = {}
    for item in overrides or []:
        keys, value = parse_override(item)
        node = set_values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    if set_values:
        layers.append(("--set", set_values))

    merged: dict[str, Any] = {}
    for origin, layer in layers:
        merged = _deep_merge(merged, layer)
        try:
            RunConfig.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(_describe_error(err, origin)) from None
    return RunConfig.model_validate(merged)
