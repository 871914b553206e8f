"""The identities that make cached work reusable, pinned: cache keys and a checkpoint of a fixed program and run.

Moving code between modules must not change them byte for byte; a user's cache and a compile's checkpoint from an
earlier version stay valid. A change that means to change a key bumps its format and updates these values.
"""

from __future__ import annotations

import json

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact, make_examples, make_program
from tests.test_optimizer import DOUBLE, add_square_once, agent_lm, examples, proposer_lm
from toolforge._hashing import content_hash
from toolforge.evaluate import example_id, program_fingerprint

GOLDEN_KEYS = {
    "program": "2489d9d40654423c2855c7f7dab7bcdf276c234c151f39dd60a8247e3b60509c",
    "example 0": "9030325959df87ce77730a1d395548be11a6d628f996417998d4937da9274feb",
    "example 1": "8e8238ea56f77743956017bac4fb1f991d46ae572d67e4e57f4fcb57eac09675",
    "example 2": "0c09b1e8371b4e19d67253a682eee775a56bd723828d57a6cadd7f2cff0d7937",
    "record 0": "57dfd834588f8a83b6564aa01f5abd18c6f17f56fc883938d74473d282f1d315",
    "record 1": "34c161e4aa7fe348450919b919d6387a4952dc1d1ae1156de778f8f127d265bd",
    "record 2": "5a37c882d9c89b469f3b5ad115753d6e72a8d38418c82ed7b488f541fe7a2839",
}
GOLDEN_CHECKPOINT = "9791d8a9fdd035c7dff7f802e7e6163031ff084db5037c0fb79b711694bd225d"


def current_keys() -> dict[str, str]:
    evaluator = tf.Evaluator(exact, cache=None, display_progress=False)
    program = make_program()
    with dspy.context(lm=agent_lm()[0]):
        base = program_fingerprint(program, metric_id=evaluator.metric_id)
    ids = [example_id(e) for e in make_examples(3)]
    return {"program": base, **{f"example {i}": eid for i, eid in enumerate(ids)}} | {
        f"record {i}": content_hash([base, eid]) for i, eid in enumerate(ids)
    }


def test_cache_keys_of_a_fixed_program_are_unchanged():
    assert current_keys() == GOLDEN_KEYS


def test_the_checkpoint_of_a_fixed_compile_is_unchanged(tmp_path):
    agent_model, _ = agent_lm()
    proposer_model, _ = proposer_lm(add_square_once)
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=2, patience=2, num_threads=1, display_progress=False,
        cache=False, log_dir=tmp_path / "run", stop_when_solved=False,
    )  # fmt: skip
    with dspy.context(lm=agent_model):
        optimizer.compile(student, trainset=examples())
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert content_hash(_stable(checkpoint)) == GOLDEN_CHECKPOINT, json.dumps(_stable(checkpoint), indent=1)[:3000]


def _stable(value):
    """The checkpoint without what differs from run to run (wall times)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not k.endswith(("_s", "seconds", "duration"))}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value
