"""A trained miniature world: synthetic scenes, a SAM and a Qwen2.5-VL trained on them on a CPU, a scorer trained
with ``rea2seg train-scorer``, and the pipeline's accuracy measured end to end through the user's code
(docs/TESTBED.md). ``python -m testbed build [--quick]``, ``python -m testbed eval [--quick] --json``,
``python -m testbed world OUT_DIR``."""

#: Every result made with testbed models carries this warning.
WARNING = "testbed models: trained on the synthetic world only (docs/TESTBED.md); meaningless on real images"
