"""Run by test_evaluate in two processes at once: evaluate the same 40 examples into one cache directory."""

from __future__ import annotations

import random

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact, make_examples, make_lm, make_program


def main(directory: str, seed: int) -> None:
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    examples = make_examples(40)
    random.Random(seed).shuffle(examples)  # the two writers meet on the same keys in different orders
    lm, _ = make_lm()
    with tf.EvaluationCache(directory) as cache, dspy.context(lm=lm):
        for chunk in range(4):
            tf.Evaluator(exact, cache=cache, num_threads=4).evaluate(make_program(), examples[chunk * 10 :][:10])
    print("ok")
