"""The identities that make cached work reusable, pinned: cache keys and a checkpoint of a fixed program and run.

Moving code between modules must not change them byte for byte; a user's cache and a compile's checkpoint from an
earlier version stay valid. A change that means to change a key bumps its format and updates these values.

Re-pinned for ToolAgent's prompt format 4 (each tool once, on one line) and its `max_tools` setting: the program
fingerprint holds `cache_settings()`, so every record key and the compile's signature changed; the examples' ids did
not, and the checkpoint differs from format 3's only in that signature and in fewer prompt tokens (24,267 and 12,822
against 32,817 and 18,402): every decision of the compile is the same.

Re-pinned for the checkpoint's `callers` (which examples called each function of an accepted toolset, so that a
resumed compile prunes as an uninterrupted one would): the checkpoint without that field hashes as before.

Re-pinned for the proposer's `rejected` input, which now also carries the last step's rejected actions: its
description is longer, so each proposer call has 11 more prompt tokens (1897 -> 1908, 1981 -> 1992); nothing else in
the checkpoint changed.
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
    "program": "59855910d3cbb4e3cc3ed1e4a3ebd1321b1af9c7b8d85bc8d64539d37d548d0a",
    "example 0": "9030325959df87ce77730a1d395548be11a6d628f996417998d4937da9274feb",
    "example 1": "8e8238ea56f77743956017bac4fb1f991d46ae572d67e4e57f4fcb57eac09675",
    "example 2": "0c09b1e8371b4e19d67253a682eee775a56bd723828d57a6cadd7f2cff0d7937",
    "record 0": "a85c8fee4733bcb78d08b0028de54dcb7601c97ff21bc6760ac69b1d1dca7747",
    "record 1": "eb922a828e8a12f45b045d13b640082f84115bb6cf346813e536f4cbe8a0b694",
    "record 2": "f2c112315f209a7fa3b5d1ddb855caccee3f91f870d42678732fc409e82fe9b5",
}
GOLDEN_CHECKPOINT = "8fc909f9089195b7e35e3d4513ccf4af02d5ec77d2861f40bc27fe955d6eff2c"


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
