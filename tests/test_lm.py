"""The embedded LM, for real: the GGUF model shipped on PyPI, loaded with llama.cpp (short prompts, few tokens)."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.exceptions import ContextWindowExceededError

import toolforge as tf
from toolforge.lm import default_model_path, resolve_lm


@pytest.fixture(scope="module")
def local_lm():
    return tf.LocalLM(max_tokens=48)


def test_the_embedded_model_is_assembled_verified_and_reused():
    first = default_model_path()
    assert first.is_file() and first.suffix == ".gguf"
    assert first.with_name(first.name + ".verified").exists()
    assert default_model_path() == first


def test_a_structured_reply_from_the_real_model_parses(local_lm):
    predict = dspy.Predict("question -> answer: int")
    with dspy.context(lm=local_lm, adapter=dspy.JSONAdapter()):
        prediction = predict(question="What is 2 + 3?")
    assert isinstance(prediction.answer, int)
    usage = local_lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_the_real_model_writes_a_valid_tool_call_for_a_tool_agent(local_lm, sandbox):
    agent = tf.ToolAgent("question -> answer: float", tools=[tf.python_tool(sandbox)], max_iters=1)
    with dspy.context(lm=local_lm, adapter=dspy.JSONAdapter()):
        prediction = agent(question="What is 6 times 7?")
    assert prediction.trajectory["tool_name_0"] in ("python", "finish")
    assert isinstance(prediction.trajectory["tool_args_0"], dict)
    assert isinstance(prediction.answer, float)


def test_a_prompt_over_the_context_window_is_dspys_context_window_error(sandbox, caplog):
    lm = tf.LocalLM(n_ctx=256, max_tokens=8, cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        with pytest.raises(ContextWindowExceededError, match="exceed context window of 256.*LocalLM\\(n_ctx=...\\)"):
            dspy.Predict("question -> answer")(question="word " * 400)
        # an agent whose trajectory outgrows the window stops it and answers from what it has; here the question
        # alone is too long, so the answer step fails too, as DSPy's own error, which the example's record keeps
        agent = tf.ToolAgent("question -> answer", tools=[tf.python_tool(sandbox)])
        with pytest.raises(ContextWindowExceededError), caplog.at_level("WARNING", logger="toolforge"):
            agent(question="word " * 400)
    assert "ending the trajectory: the context window is exceeded" in caplog.text


def test_identical_requests_are_answered_from_dspy_cache(tmp_path):
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm = tf.LocalLM(max_tokens=8)
    predict = dspy.Predict("question -> answer: int")
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        first = predict(question="What is 1 + 1?")
        with dspy.utils.usage_tracker.track_usage() as usage:
            second = predict(question="What is 1 + 1?")
    assert first.answer == second.answer
    assert usage.get_total_tokens() == {}  # nothing reached the model


def test_resolve_lm_understands_what_users_type(tmp_path):
    assert isinstance(resolve_lm("local"), tf.LocalLM)
    assert resolve_lm("openai/gpt-4o-mini").model == "openai/gpt-4o-mini"
    with pytest.raises(tf.ToolforgeError, match="'gpt4' is not a known LM"):
        resolve_lm("gpt4")
    for known in ("anthropic/claude-sonnet-4-5", "ollama_chat/llama3.2", "hosted_vllm/my-model", "openrouter/a/b"):
        assert resolve_lm(known).model == known  # found offline: no request is made
    with pytest.raises(tf.ToolforgeError, match="neither DSPy nor LiteLLM knows a provider called 'nonexistent'"):
        resolve_lm("nonexistent/model")
    with pytest.raises(tf.ToolforgeError, match="model file .* does not exist; pass the path of a .gguf file"):
        resolve_lm(str(tmp_path / "missing.gguf"))
    with pytest.raises(tf.ToolforgeError, match="cannot load 'nope' from 'json'"):
        resolve_lm("json:nope")


def test_the_model_string_names_the_weights_not_the_path(tmp_path):
    """DSPy's cache keys on the model string: two files called model.gguf must not answer for each other."""
    first, second, copy = (tmp_path / d / "model.gguf" for d in ("a", "b", "c"))
    for path, content in ((first, b"weights one" * 100_000), (second, b"weights two" * 100_000)):
        path.parent.mkdir()
        path.write_bytes(content)
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    models = [tf.LocalLM(path).model for path in (first, second, copy)]
    assert models[0].startswith("local/model@") and len(models[0]) == len("local/model@") + 12
    assert models[0] != models[1]  # same name, other weights
    assert models[0] == models[2]  # same weights elsewhere: cached replies are shared
    assert tf.lm.model_identity(first) != tf.lm.model_identity(second)
    assert tf.LocalLM().model == f"local/gemma-3-270m-q4_k_m@{tf.lm.model_identity(tf.lm.default_model_path())}"
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"0123456789")
    assert len(tf.lm.model_identity(tiny)) == 12 and tf.lm.model_identity(tiny) != tf.lm.model_identity(first)
