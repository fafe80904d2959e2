"""rnnflow's steps and their helpers. Importing any of them silences TensorFlow's C++ start-up lines in this
process, before TensorFlow loads (tasks/quiet_tensorflow.py)."""

from tasks import quiet_tensorflow as _quiet_tensorflow

_quiet_tensorflow.install()
