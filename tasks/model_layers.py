"""The Keras layers rnnflow's models hold beyond Keras' own, registered so a saved model loads with them."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="rnnflow")
class OneHotTokens(layers.Layer):
    """Token ids -> one-hot vectors, made batch by batch inside the model.

    The seeds materialised the one-hot tensor up front (25,000 x 100 x 500 floats, gigabytes);
    here only one batch exists at a time. Id 0 is padding and is masked when asked.
    """

    def __init__(self, num_tokens: int, mask_zero: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_tokens = num_tokens
        self.mask_zero = mask_zero

    def call(self, inputs):
        return keras.ops.one_hot(inputs, self.num_tokens, dtype=self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.num_tokens)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_tokens": self.num_tokens, "mask_zero": self.mask_zero}


@keras.saving.register_keras_serializable(package="rnnflow")
class MaxOverSteps(layers.Layer):
    """The maximum over the real steps of each sequence.

    Keras' GlobalMaxPooling1D ignores the mask (and warns), so padded steps, whose recurrent
    outputs are zeros, would take part in the maximum; here they are left out. A row with no
    real step gives zeros.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return keras.ops.max(inputs, axis=1)
        real = keras.ops.expand_dims(keras.ops.cast(mask, "bool"), -1)
        lowest = keras.ops.cast(-1e9, inputs.dtype)
        top = keras.ops.max(keras.ops.where(real, inputs, lowest), axis=1)
        return keras.ops.where(keras.ops.any(real, axis=1), top, keras.ops.zeros_like(top))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="rnnflow")
class TokenWindow(layers.Layer):
    """The last (or first) `length` tokens of each row's text, right-padded: how one member reads a long review.

    Rows come from encode either right-padded (text, then zeros) or left-padded (zeros, then text);
    a row's text is its nonzero ids, one run. The window is cut from that run, so a 900-token row and
    a 120-token row both give their own last (or first) tokens, and padding stays at the right, the
    layout cuDNN's masked kernels accept.
    """

    def __init__(self, length: int, at: str = "end", **kwargs: Any):
        super().__init__(**kwargs)
        if at not in ("end", "start"):
            raise ValueError(f"TokenWindow at must be end or start, not {at!r}")
        self.length = length
        self.at = at

    def call(self, inputs):
        ops = keras.ops
        steps = ops.shape(inputs)[1]
        # As long as the window, or as the rows when they are shorter (batches padded to their own longest
        # review, train.bucket_by_length): the steps past the rows' width could only be padding.
        width = min(steps, self.length) if isinstance(steps, int) else ops.minimum(steps, self.length)
        real = ops.cast(ops.not_equal(inputs, 0), "int32")
        size = ops.sum(real, axis=1, keepdims=True)
        # The text's first position: 0 when right-padded, the number of zeros before it when left-padded.
        index = ops.arange(steps, dtype="int32")[None, :]
        begin = ops.min(ops.where(real > 0, index, steps), axis=1, keepdims=True)
        skip = ops.maximum(size - self.length, 0) if self.at == "end" else ops.zeros_like(size)
        offsets = ops.arange(width, dtype="int32")[None, :]
        positions = begin + skip + offsets
        taken = ops.take_along_axis(inputs, ops.minimum(positions, steps - 1), axis=1)
        return ops.where(offsets < ops.minimum(size, self.length), taken, ops.zeros_like(taken))

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]  # rows of any length: a window of any length up to self.length
        return (input_shape[0], None if steps is None else min(steps, self.length))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length, "at": self.at}


@keras.saving.register_keras_serializable(package="rnnflow")
class VocabularyCap(layers.Layer):
    """Ids from num_words up read as out-of-vocabulary: the model sees the num_words most frequent tokens only.

    encode numbers tokens by frequency (ties alphabetically), so a vocabulary of N is the first N ids
    of a larger one: this gives exactly the rows an encode with num_words N would, from one encode
    that members with different vocabularies share. oov is encode's out-of-vocabulary id (tasks.encode.OOV).
    """

    def __init__(self, num_words: int, oov: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_words = num_words
        self.oov = oov

    def call(self, inputs):
        return keras.ops.where(inputs >= self.num_words, keras.ops.full_like(inputs, self.oov), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_words": self.num_words, "oov": self.oov}


@keras.saving.register_keras_serializable(package="rnnflow")
class NgramBag(layers.Layer):
    """A bag of the row's token 1..n-grams, each with learnt weights, summed: the linear channel beside the recurrence.

    What Johnson & Zhang's seq2-bown puts beside a sequence model, and what a bag-of-n-grams logistic regression
    (the run's baseline) is: unigrams get a row of the table each (the token's id); longer n-grams are hashed into
    `buckets` rows after them. An n-gram counts when none of its ids is padding (0), so pre- and post-padded rows
    give the same sum, and rows of any width (length buckets) work. The sum is divided by the square root of the
    row's number of n-grams, so long and short reviews give logits of one size. `scale` multiplies the table's
    values: under Adam that is the channel's learning rate times `scale` (Adam's step does not grow with the
    gradient), so one optimizer trains the table, which needs a faster rate, and the recurrence.
    `drop` leaves the bag out of a random fraction of the training rows (all of its logits, per row; never in
    inference): on those rows the recurrence beside it must classify alone, where a bag that fits the training rows
    within an epoch would leave it almost no loss to learn from.
    """

    PRIME = 1_000_003  # per-token multiplier of the rolling hash
    MODULUS = 2_147_483_647  # keeps the rolling hash under 2**31, so its products stay inside int64
    SALT = 7_919  # times n, added before the bucket: a bigram and a trigram of equal hash land in different rows

    def __init__(self, n: int, buckets: int, num_tokens: int, units: int = 1, scale: float = 1.0, drop: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.n, self.buckets, self.num_tokens, self.units, self.scale, self.drop = n, buckets, num_tokens, units, scale, drop
        self.seed_generator = keras.random.SeedGenerator() if drop else None

    def build(self, input_shape):
        rows = self.num_tokens + (self.buckets if self.n > 1 else 0)
        self.table = self.add_weight(shape=(rows, self.units), initializer="zeros", name="table")

    def ngram_rows(self, ids):
        """The table rows of every 1..n-gram of each row ([batch, steps * n - ...]) and whether each counts (not padding)."""
        ops = keras.ops
        ids = ops.cast(ids, "int64")
        real = ops.not_equal(ids, 0)
        rows, counts = [ids], [real]
        hashed, valid = ids, real
        for k in range(2, self.n + 1):
            hashed = ops.mod(hashed[:, :-1] * self.PRIME + ids[:, k - 1:], self.MODULUS)
            valid = ops.logical_and(valid[:, :-1], real[:, k - 1:])
            rows.append(self.num_tokens + ops.mod(hashed + k * self.SALT, self.buckets))
            counts.append(valid)
        return ops.concatenate(rows, axis=1), ops.cast(ops.concatenate(counts, axis=1), self.compute_dtype)

    def ngram_matrix(self, x: Any, rows_a_batch: int = 512) -> Any:
        """Rows x (int ids) as the bag reads them: a sparse [rows, table rows] matrix whose product with the table is call's logits.

        Each entry is how often the n-gram occurs in the row, divided by the square root of the row's number of n-grams.
        """
        import numpy as np
        from scipy import sparse

        total = self.num_tokens + (self.buckets if self.n > 1 else 0)
        parts = []
        for start in range(0, len(x), rows_a_batch):
            rows, counts = (np.asarray(t) for t in self.ngram_rows(np.asarray(x[start : start + rows_a_batch])))
            real = counts > 0
            which = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)[real]
            norm = 1.0 / np.sqrt(np.maximum(real.sum(1), 1.0))
            part = sparse.csr_matrix((norm[which].astype(np.float32), (which, rows[real])), shape=(len(rows), total))
            part.sum_duplicates()
            parts.append(part)
        return sparse.vstack(parts, format="csr") if parts else sparse.csr_matrix((0, total), dtype=np.float32)

    @staticmethod
    def _class_columns(y: Any, n_classes: int) -> Any:
        """One target column a class, 1 where a row is of it: binary, class 1 alone (the bag's one unit); else each class."""
        import numpy as np

        y = np.asarray(y).astype(np.int64)
        return (y[:, None] == (np.array([1]) if n_classes == 2 else np.arange(n_classes))[None, :]).astype(np.float64)

    def naive_bayes_ratios(self, x: Any, y: Any, n_classes: int, min_rows: int = 5, rows_a_batch: int = 512) -> Any:
        """Each n-gram's log-count ratio (Wang & Manning's NBSVM r) on training rows x (int ids), a column a unit of the bag.

        The log of the n-gram's share of one class's rows against its share of the other's (of the rest's, a column a
        class with more than two), counted once a row, add-one smoothed; counted batch by batch, so memory is the
        table's whatever the number of rows. An n-gram in fewer than min_rows training rows gets 0: rare ones would let
        the start classify its own training rows almost without error (0.99 train accuracy on IMDb with every n-gram
        kept), which leaves the recurrence beside it little loss to learn from.
        """
        import numpy as np

        total = self.num_tokens + (self.buckets if self.n > 1 else 0)
        targets = self._class_columns(y, n_classes)
        inside, everywhere = np.zeros((total, targets.shape[1])), np.zeros(total)
        for start in range(0, len(x), rows_a_batch):
            batch = slice(start, start + rows_a_batch)
            batch_inside, batch_everywhere = self._rows_holding(self.ngram_matrix(x[batch]), targets[batch])
            inside += batch_inside
            everywhere += batch_everywhere
        return self._log_count_ratios(inside, everywhere, min_rows)

    @staticmethod
    def _rows_holding(matrix: Any, targets: Any) -> tuple[Any, Any]:
        """(rows of each column's class holding each n-gram, all rows holding it) in an ngram_matrix and its target columns."""
        import numpy as np

        present = (matrix > 0).astype(np.float64)
        return np.asarray(present.T @ targets), np.asarray(present.sum(axis=0)).ravel()

    @staticmethod
    def _log_count_ratios(inside: Any, everywhere: Any, min_rows: int) -> Any:
        """naive_bayes_ratios from its counts (_rows_holding)."""
        import numpy as np

        outside = everywhere[:, None] - inside
        inside, outside = inside + 1.0, outside + 1.0
        ratios = np.log(inside / inside.sum(axis=0)) - np.log(outside / outside.sum(axis=0))
        return ratios * (everywhere >= min_rows)[:, None]

    def naive_bayes_table(self, x: Any, y: Any, n_classes: int, spread: float = 2.0, min_rows: int = 5) -> Any:
        """The table Naive Bayes gives on training rows x (int ids) and labels y: model.ngram_start naive_bayes.

        naive_bayes_ratios, scaled so the bag's logits over x spread with standard deviation `spread` (divided by
        `scale`, which the call multiplies back): a start that already classifies, which Adam refines.
        """
        import numpy as np

        table = self.naive_bayes_ratios(x, y, n_classes, min_rows)
        std = float(np.asarray(self.ngram_matrix(x[:4096]) @ table).std()) or 1.0  # the spread, on the first rows
        return (table * (spread / std / self.scale)).astype("float32")

    LOGISTIC_ROWS = 50_000  # logistic_table fits on at most this many rows: its sparse matrix is held in memory

    def logistic_table(
        self, x: Any, y: Any, n_classes: int, c_values: Any, x_val: Any, y_val: Any, min_rows: int = 5,
    ) -> tuple[Any, dict[str, Any]]:
        """The table of an NBSVM fitted on training rows x (int ids) and labels y, and how it was chosen: model.ngram_start logistic.

        A logistic regression (scikit-learn's liblinear, L2 penalty with inverse strength C) on the bag's own features
        (ngram_matrix) scaled by naive_bayes_ratios, a column a unit of the bag (one against the rest with more than
        two classes): Wang & Manning's NB-weighted logistic regression, which the run's baseline fits on hashed TF-IDF
        n-grams of the raw text (tasks/baseline.py). Each C of c_values is fitted and the one whose regression has the
        best accuracy on the validation rows (x_val, y_val) kept. The table is each n-gram's ratio times its weight (over
        `scale`), so the bag starts as that regression, without its intercept (the recurrent logits' bias is learnt
        beside it). The ratios count every training row (from the regression's matrix when it holds them all); the
        regression, whose features are held in memory, fits on the first LOGISTIC_ROWS. Returns the table and {"start", "c", "val_accuracy" of each C}.
        """
        import numpy as np
        from scipy import sparse
        from sklearn.linear_model import LogisticRegression

        matrix, held = self.ngram_matrix(x[: self.LOGISTIC_ROWS]), self.ngram_matrix(x_val)
        targets = self._class_columns(np.asarray(y)[: self.LOGISTIC_ROWS], n_classes)
        if len(x) <= self.LOGISTIC_ROWS:  # every row is in the matrix: count the ratios from it, not by reading x again
            ratios = self._log_count_ratios(*self._rows_holding(matrix, targets), min_rows)
        else:
            ratios = self.naive_bayes_ratios(x, y, n_classes, min_rows)
        y_val = np.asarray(y_val).astype(np.int64)
        tables = {float(c): np.zeros_like(ratios) for c in c_values}
        decisions = {float(c): np.full((len(y_val), ratios.shape[1]), -np.inf if n_classes > 2 else 0.0) for c in c_values}
        for column in range(ratios.shape[1]):  # each column's features once, fitted with every C
            used = np.flatnonzero(ratios[:, column])  # n-grams in at least min_rows rows: the others stay at 0
            if len(used) == 0 or len(np.unique(targets[:, column])) < 2:
                continue
            weigh = sparse.diags(ratios[used, column])
            features, held_features = (matrix[:, used] @ weigh).tocsr(), (held[:, used] @ weigh).tocsr()
            for c in tables:
                fitted = LogisticRegression(C=c, solver="liblinear").fit(features, targets[:, column])
                tables[c][used, column] = ratios[used, column] * fitted.coef_.ravel()
                decisions[c][:, column] = fitted.decision_function(held_features)
        scores: dict[str, float] = {}
        for c, decision in decisions.items():
            predicted = (decision[:, 0] > 0).astype(np.int64) if n_classes == 2 else decision.argmax(axis=1)
            scores[f"{c:g}"] = round(float((predicted == y_val).mean()), 4) if len(y_val) else float("nan")
        chosen = max(tables, key=lambda c: scores[f"{c:g}"])  # max keeps the first of equals
        return (tables[chosen] / self.scale).astype("float32"), {"start": "logistic", "c": chosen, "val_accuracy": scores}

    def call(self, inputs, training=None):
        ops = keras.ops
        rows, counts = self.ngram_rows(inputs)
        weights = ops.take(self.table, rows, axis=0) * ops.expand_dims(counts, -1)
        total = ops.sum(weights, axis=1) * self.scale
        logits = total / ops.sqrt(ops.maximum(ops.sum(counts, axis=1, keepdims=True), 1.0))
        if training and self.drop:
            kept = keras.random.uniform((ops.shape(inputs)[0], 1), seed=self.seed_generator) >= self.drop
            logits = logits * ops.cast(kept, logits.dtype)
        return logits

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n": self.n, "buckets": self.buckets, "num_tokens": self.num_tokens, "units": self.units, "scale": self.scale, "drop": self.drop}
