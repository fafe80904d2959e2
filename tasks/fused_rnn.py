"""GRU and LSTM layers whose input projection runs once per batch, outside the recurrence (train.fused_input).

Keras 3 on TensorFlow has no fused recurrent kernel on a CPU: GRU and LSTM run a `while_loop` over
their cell, and the cell multiplies each step's input by the input kernel inside the loop, T small
matrix products of [batch, features] x [features, gates] per batch. Those T products are one product
of [batch * T, features] x [features, gates], one call instead of T inside the loop. FusedGRU
and FusedLSTM compute it once before the loop (x @ kernel + the input bias, over every step of the
batch at once) and leave the loop only the recurrent part (h @ recurrent_kernel, the gates). The loop's
gradient is written out (gru_sequence, lstm_sequence): TensorFlow's own gradient of a while_loop keeps every
intermediate of every step and runs T small products for the recurrent kernel's gradient; here one loop back
recomputes the gates from the kept states, and the kernel's gradient is one large product after it. The GRU's two
loops take STEPS_PER_TURN steps a turn, each turn one XLA-compiled function (_gru_steps), one kernel where the
graph ran some 20-35 ops a step, in training and in inference alike: the rows are padded up to a multiple of
ROWS_STEP, so one compile serves every batch of up to 64 rows (a served request's, say). A fit too small to pay
that compile back (turn_for) runs graph steps instead, and its saved model keeps them (FusedGRU's turn).

They are keras.layers.GRU and LSTM with the same weights (cell/kernel, cell/recurrent_kernel,
cell/bias), the same configuration and the same masking (a padded step keeps the state; outputs at padding
as Keras' loop gives them, zero_output_for_mask and go_backwards included): numerically the same model, to
float rounding (tests/test_fused_rnn.py). Where Keras could use cuDNN (a GPU) or where the cell is not one
this covers (dropout inside the cell, unroll, GRU reset_after false), they are Keras' layer itself: the call
goes to keras.layers.GRU/LSTM unchanged.

Which cells have a fused variant, and which class a layer gets, is the registry's (tasks/architectures.py: Cell.fused,
recurrent_layer).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import keras
from keras import layers, ops


# The compiled steps see a batch's rows padded up to a multiple of this (gru_sequence): XLA compiles a turn once for
# each number of rows it meets (1-3 s), and a padded row costs next to nothing beside a compile.
ROWS_STEP = 64
# Time steps in one compiled call of the GRU's loops (gru_sequence): fewer calls and TensorArray reads and writes.
# docs/training-speed.md §12: a turn of 8 took 32% less time than a step a call; 4 took 14% more than 8, 16 6% less
# with a longer compile (the turn is unrolled), 32 more.
STEPS_PER_TURN = 8
# A fit with fewer training rows x steps than this an epoch runs the GRU's loops as graph ops, a step a turn (turn 0):
# the compiled turn of 8 costs a process some 4 CPU-s of XLA compile (training and inference) and saves about 2 µs a
# row-step against the graph steps, so it pays from some 2M row-steps a fit, 1M an epoch over a few (§13).
COMPILE_PAYS_FROM = 1_000_000


def turn_for(rows: int, steps: int) -> int:
    """FusedGRU's turn for a fit of `rows` training rows `steps` long: STEPS_PER_TURN, or 0 (graph steps) for a small one."""
    return STEPS_PER_TURN if rows * steps >= COMPILE_PAYS_FROM else 0


@lru_cache(maxsize=1)
def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU: there Keras' layer runs cuDNN's fused kernel, which this module leaves in use."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _project(sequences: Any, kernel: Any, bias: Any | None) -> Any:
    """sequences [B, T, F] @ kernel [F, G] (+ bias [G]) as one [B*T, F] x [F, G] product: [B, T, G]."""
    shape = ops.shape(sequences)
    flat = ops.reshape(sequences, (-1, shape[-1]))
    projected = ops.matmul(flat, kernel)
    if bias is not None:
        projected = projected + bias
    return ops.reshape(projected, (shape[0], shape[1], kernel.shape[-1]))


class _FusedInput:
    """The shared part: when the fused loop applies, and the outputs Keras' loop would give."""

    def _fused_applies(self) -> bool:
        cell = self.cell
        return not (gpu_present() or self.unroll or cell.dropout or cell.recurrent_dropout or not getattr(cell, "reset_after", True))

    def _outputs(self, hs: Any, m: Any | None, states: list[Any]) -> tuple[Any, Any, list[Any]]:
        """(last output, outputs batch-major, states), as Keras' loop gives them from every step's state hs [T, B, U]."""
        import tensorflow as tf

        if m is not None:
            # Keras' outputs at padding: zeros with zero_output_for_mask; else the last real step's output, 0 before any.
            hs = hs * (m if self.zero_output_for_mask else tf.cast(tf.cumsum(m, axis=0) > 0, hs.dtype))
        return hs[-1], tf.transpose(hs, (1, 0, 2)), states


@lru_cache(maxsize=1)
def _gru_step_bodies() -> tuple[Any, Any]:
    """One step of the GRU, forward (x [B, 3U], h, m [B, 1] or None, rk, rb) -> the next state, and back
    (x, hp, dh, m, rk, rb) -> (dh for the step before, the gradient of this step's x, of its recurrent product)."""
    import tensorflow as tf

    def gates(x, h, rk, rb):
        units = rk.shape[0]
        inner = tf.matmul(h, rk) + rb
        zr = tf.sigmoid(x[:, : 2 * units] + inner[:, : 2 * units])
        return zr, tf.tanh(x[:, 2 * units :] + zr[:, units:] * inner[:, 2 * units :]), inner[:, 2 * units :]

    def forward(x, h, m, rk, rb):
        zr, n, _ = gates(x, h, rk, rb)
        step = (1.0 - zr[:, : rk.shape[0]]) * (n - h)  # h_new - h
        return h + (step if m is None else m * step)

    def backward(x, hp, dh, m, rk, rb):
        units = rk.shape[0]
        zr, n, inner_h = gates(x, hp, rk, rb)
        z, r = zr[:, :units], zr[:, units:]
        dhn = dh if m is None else m * dh
        da_n = dhn * (1.0 - z) * (1.0 - n * n)
        da_zr = tf.concat([dhn * (hp - n), da_n * inner_h], axis=1) * zr * (1.0 - zr)
        d_inner = tf.concat([da_zr, da_n * r], axis=1)
        return dh - dhn * (1.0 - z) + tf.matmul(d_inner, rk, transpose_b=True), tf.concat([da_zr, da_n], axis=1), d_inner

    return forward, backward


@lru_cache(maxsize=8)
def _gru_steps(chunk: int, compiled: bool) -> tuple[Any, Any]:
    """gru_sequence's turn of `chunk` steps, forward and back; compiled: each one function compiled by XLA.

    The forward (x [k, B, 3U], h, m [k, B, 1], rk, rb) -> (the k states [k, B, U], the last); the back (x, hp
    [k, B, U], the states' gradients [k, B, U], m, dh after the turn, rk, rb) -> (dh before it, dx [k, B, 3U],
    d_inner [k, B, 3U]). Called inside the graph's while_loops, a compiled turn is one kernel for k steps where the
    graph ran about 20 ops a step forward and 35 back, and one TensorArray read and write instead of k. XLA
    compiles each once per number of rows (gru_sequence pads them to a multiple of ROWS_STEP: [B, U] is the only
    shape, whatever the batch's width), in 1-3 s. One pair a process: models and members share the compiles.
    """
    import tensorflow as tf

    step_forward, step_backward = _gru_step_bodies()

    def forward(x, h, m, rk, rb):
        states = []
        for j in range(chunk):
            h = step_forward(x[j], h, m[j], rk, rb)
            states.append(h)
        return tf.stack(states), h

    def backward(x, hp, d_hs, m, dh, rk, rb):
        dxs, d_inners = [None] * chunk, [None] * chunk
        for j in reversed(range(chunk)):
            dh, dxs[j], d_inners[j] = step_backward(x[j], hp[j], dh + d_hs[j], m[j], rk, rb)
        return dh, tf.stack(dxs), tf.stack(d_inners)

    if compiled:
        return tf.function(forward, jit_compile=True), tf.function(backward, jit_compile=True)
    return forward, backward


def gru_sequence(
    xp: Any, mask: Any | None, h0: Any, rk: Any, rb: Any, compiled: bool = True, chunk: int = STEPS_PER_TURN,
) -> tuple[Any, Any]:
    """The GRU recurrence (reset_after) over projected inputs: (every step's state [T, B, U], the last state [B, U]).

    xp: x @ kernel + input bias, time-major [T, B, 3U]; mask: [T, B, 1] floats (1 a real step, 0 padding, whose
    step keeps the state as it was, as Keras' loop does) or None; h0 [B, U]; rk [U, 3U]; rb [3U].
    Its gradient is written out (tf.custom_gradient): one loop back over the steps that recomputes the gates from
    the states kept, and leaves the recurrent kernel's gradient to one [U, T*B] x [T*B, 3U] product after it,
    where TensorFlow's own gradient of a while_loop would accumulate T small products and every intermediate.
    Each loop takes `chunk` steps a turn, one XLA-compiled function (_gru_steps; compiled false: graph ops, FusedGRU's
    turn 0 and bench/recurrence.py's variants). The steps are padded up to a multiple of chunk and, for the compiled
    turns (one compile for every batch of up to ROWS_STEP rows), the rows up to one of ROWS_STEP, all padding (mask 0:
    a padded row's state stays h0, a padded step keeps the state), and cut off again.
    """
    import tensorflow as tf

    steps, rows = tf.shape(xp)[0], tf.shape(h0)[0]
    pad = [[0, (-steps) % chunk], [0, (-rows) % ROWS_STEP if compiled else 0], [0, 0]]
    mask = tf.pad(tf.ones_like(xp[:, :, :1]) if mask is None else mask, pad)
    hs, h_last = _gru_loops(tf.pad(xp, pad), mask, tf.pad(h0, pad[1:]), rk, rb, compiled, chunk)
    return hs[:steps, :rows], h_last[:rows]


def _gru_loops(xp: Any, mask: Any, h0: Any, rk: Any, rb: Any, compiled: bool, chunk: int) -> tuple[Any, Any]:
    """gru_sequence's two loops, a turn of `chunk` steps at a time (the steps a multiple of chunk)."""
    import tensorflow as tf

    units, gates = rk.shape[0], rk.shape[1]
    forward_turn, backward_turn = _gru_steps(chunk, compiled)

    def turns_of(tensor: Any) -> Any:
        shape = tf.shape(tensor)
        split = tf.reshape(tensor, tf.concat([[shape[0] // chunk, chunk], shape[1:]], axis=0))
        return tf.TensorArray(tensor.dtype, size=shape[0] // chunk, clear_after_read=False).unstack(split)

    @tf.custom_gradient
    def run(xp, h0, rk, rb):
        turns = tf.shape(xp)[0] // chunk
        xs, ms = turns_of(xp), turns_of(mask)

        def forward(t, h, out):
            states, h = forward_turn(xs.read(t), h, ms.read(t), rk, rb)
            return t + 1, h, out.write(t, states)

        _, h_last, out = tf.while_loop(lambda t, *_: t < turns, forward, (0, h0, tf.TensorArray(xp.dtype, size=turns)))
        hs = tf.reshape(out.stack(), tf.shape(xp[..., :units]))
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)

        def grad(d_hs, d_last):
            hp_ta, dh_ta = turns_of(h_prev), turns_of(d_hs)

            def backward(t, dh, dx, dinner):
                t = t - 1
                dh, dx_t, d_inner = backward_turn(xs.read(t), hp_ta.read(t), dh_ta.read(t), ms.read(t), dh, rk, rb)
                return t, dh, dx.write(t, dx_t), dinner.write(t, d_inner)

            arrays = (tf.TensorArray(xp.dtype, size=turns), tf.TensorArray(xp.dtype, size=turns))
            _, dh0, dx, dinner = tf.while_loop(lambda t, *_: t > 0, backward, (turns, d_last, *arrays))
            d_inner = tf.reshape(dinner.stack(), (-1, gates))
            d_rk = tf.matmul(tf.reshape(h_prev, (-1, units)), d_inner, transpose_a=True)
            return tf.reshape(dx.stack(), tf.shape(xp)), dh0, d_rk, tf.reduce_sum(d_inner, axis=0)

        return (hs, h_last), grad

    return run(xp, h0, rk, rb)


def lstm_sequence(xp: Any, mask: Any | None, h0: Any, c0: Any, rk: Any) -> tuple[Any, Any, Any]:
    """The LSTM recurrence over projected inputs: (every step's h [T, B, U], the last h, the last c [B, U]).

    xp: x @ kernel + bias, time-major [T, B, 4U] (gates i, f, c, o as Keras orders them); mask as gru_sequence's;
    rk [U, 4U]. The gradient is written out as gru_sequence's: one loop back over the kept states, the recurrent
    kernel's gradient one product after it.
    """
    import tensorflow as tf

    units = rk.shape[0]

    def gates(x, hp):
        z = x + tf.matmul(hp, rk)
        ifo = tf.sigmoid(tf.concat([z[:, : 2 * units], z[:, 3 * units :]], axis=1))
        return ifo[:, :units], ifo[:, units : 2 * units], tf.tanh(z[:, 2 * units : 3 * units]), ifo[:, 2 * units :]

    @tf.custom_gradient
    def run(xp, h0, c0, rk_in):
        steps = tf.shape(xp)[0]
        xs = tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(xp)
        ms = None if mask is None else tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(mask)

        def forward(t, h, c, out_h, out_c):
            i, f, g, o = gates(xs.read(t), h)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            if ms is not None:
                m = ms.read(t)
                h_new, c_new = h + m * (h_new - h), c + m * (c_new - c)
            return t + 1, h_new, c_new, out_h.write(t, h_new), out_c.write(t, c_new)

        out_h, out_c = tf.TensorArray(xp.dtype, size=steps), tf.TensorArray(xp.dtype, size=steps)
        _, h_last, c_last, out_h, out_c = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, c0, out_h, out_c))
        hs, cs = out_h.stack(), out_c.stack()
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
        c_prev = tf.concat([c0[None], cs[:-1]], axis=0)

        def grad(d_hs, d_h_last, d_c_last):
            hp_ta = tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(h_prev)
            cp_ta = tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(c_prev)
            dh_ta = tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(d_hs)
            rk_t = tf.transpose(rk)

            def backward(t, dh, dc, dz_ta):
                t = t - 1
                hp, cp = hp_ta.read(t), cp_ta.read(t)
                dh = dh + dh_ta.read(t)
                i, f, g, o = gates(xs.read(t), hp)
                tc = tf.tanh(f * cp + i * g)
                m = None if ms is None else ms.read(t)
                dh_new, dc_new = (dh, dc) if m is None else (m * dh, m * dc)
                dc_all = dc_new + dh_new * o * (1.0 - tc * tc)
                ifo = tf.concat([i, f, o], axis=1)  # the sigmoid gates: their derivative is ifo * (1 - ifo)
                d_ifo = tf.concat([dc_all * g, dc_all * cp, dh_new * tc], axis=1) * ifo * (1.0 - ifo)
                dz = tf.concat([d_ifo[:, : 2 * units], dc_all * i * (1.0 - g * g), d_ifo[:, 2 * units :]], axis=1)
                dh = tf.matmul(dz, rk_t) + (0.0 if m is None else (1.0 - m) * dh)
                dc = dc_all * f + (0.0 if m is None else (1.0 - m) * dc)
                return t, dh, dc, dz_ta.write(t, dz)

            d_h_last = tf.zeros_like(h0) if d_h_last is None else d_h_last
            d_c_last = tf.zeros_like(c0) if d_c_last is None else d_c_last
            start = (steps, d_h_last, d_c_last, tf.TensorArray(xp.dtype, size=steps))
            _, dh0, dc0, dz = tf.while_loop(lambda t, *_: t > 0, backward, start)
            dz = dz.stack()
            d_rk = tf.matmul(tf.reshape(h_prev, (-1, units)), tf.reshape(dz, (-1, 4 * units)), transpose_a=True)
            return dz, dh0, dc0, d_rk

        return (hs, h_last, c_last), grad

    return run(xp, h0, c0, rk)


@keras.saving.register_keras_serializable(package="rnnflow")
class FusedGRU(_FusedInput, layers.GRU):
    """keras.layers.GRU (reset_after=True) with the input projection taken out of the loop (module docstring).

    turn: steps a compiled turn of its loops (gru_sequence's chunk), or 0 for graph steps, one a turn (turn_for).
    """

    def __init__(self, *args: Any, turn: int = STEPS_PER_TURN, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.turn = int(turn)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "turn": self.turn}

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._fused_applies():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        import tensorflow as tf

        cell, units = self.cell, self.cell.units
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        bias = cell.bias if cell.use_bias else tf.zeros((2, 3 * units), self.compute_dtype)
        xp = tf.transpose(_project(sequences, cell.kernel, bias[0]), (1, 0, 2))  # time-major
        m = None if mask is None else tf.transpose(tf.cast(mask, xp.dtype))[:, :, None]
        if self.go_backwards:  # Keras' loop: the steps read last to first, the outputs in that order
            xp = tf.reverse(xp, [0])
            m = None if m is None else tf.reverse(m, [0])
        rk = tf.convert_to_tensor(cell.recurrent_kernel)
        hs, h_last = gru_sequence(xp, m, h0, rk, bias[1], compiled=self.turn > 0, chunk=max(self.turn, 1))
        return self._outputs(hs, m, [h_last])


@keras.saving.register_keras_serializable(package="rnnflow")
class FusedLSTM(_FusedInput, layers.LSTM):
    """keras.layers.LSTM with the input projection (and the bias) taken out of the loop, its gradient written out (module docstring)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._fused_applies():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        import tensorflow as tf

        cell = self.cell
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        h0, c0 = initial_state
        xp = tf.transpose(_project(sequences, cell.kernel, cell.bias if cell.use_bias else None), (1, 0, 2))  # time-major
        m = None if mask is None else tf.transpose(tf.cast(mask, xp.dtype))[:, :, None]
        if self.go_backwards:
            xp = tf.reverse(xp, [0])
            m = None if m is None else tf.reverse(m, [0])
        hs, h_last, c_last = lstm_sequence(xp, m, h0, c0, tf.convert_to_tensor(cell.recurrent_kernel))
        return self._outputs(hs, m, [h_last, c_last])


def fused_input_used(train_cfg: Any) -> bool:
    """What train.json's fused_input says: train.fused_input asked for, and no GPU (where Keras' cuDNN layer runs instead)."""
    return bool(train_cfg.fused_input) and not gpu_present()
