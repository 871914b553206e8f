# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo bench clean

install: $(STAMP)

# llama.cpp is built for a portable CPU level, not for this machine's (-march=native): a native build used AMX
# instructions that segfaulted on a virtual machine that reports them, and pip's wheel cache would hand a native
# wheel built elsewhere to this machine; so it is built here, without that cache.
LLAMA_CMAKE_ARGS_x86_64 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CMAKE_ARGS := $(or $(LLAMA_CMAKE_ARGS_$(shell uname -m)),-DGGML_NATIVE=OFF)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/python -m pip install --quiet --no-cache-dir 'llama-cpp-python>=0.3'
	$(BIN)/python -m pip install --quiet -e '.[local,report,dev,paper,mlflow,retrieval]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check toolforge tests benchmarks programs
	$(BIN)/ruff format --check toolforge tests benchmarks programs
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format toolforge tests benchmarks programs
	$(BIN)/ruff check --fix toolforge tests benchmarks programs

# The main job, small enough for a laptop: train the table agent's functions with the embedded LM (agent and
# proposer), then score the untrained and the trained agent on held-out problems, written into the report. Run it
# again (after an interruption, or with another toolforge version): it starts afresh, and everything already computed
# comes from the caches, so it takes seconds.
DEMO_RUN := runs/demo
demo: $(STAMP)
	$(BIN)/toolforge compile programs/table_agent.py --lm local --epochs 2 --limit 4 --trials 1 --max-actions 1 \
		--trajectory-budget 3000 --threads 2 --out $(DEMO_RUN) --restart
	@echo "== held-out problems, untrained agent (python tool only) and trained agent, recorded in the report:"
	$(BIN)/python -m programs.held_out $(DEMO_RUN) programs/table_agent.py --lm local --limit 5 --threads 2
	$(BIN)/toolforge report $(DEMO_RUN)
	@echo "== report: $(DEMO_RUN)/report.md; learning curve: $(DEMO_RUN)/learning-curve.png"

bench: $(STAMP)
	$(BIN)/python benchmarks/sandbox_overhead.py
	$(BIN)/python benchmarks/cache.py
	$(BIN)/python benchmarks/optimizer_overhead.py
	$(BIN)/python benchmarks/local_lm.py
	$(BIN)/python benchmarks/answer_checking.py
	$(BIN)/python benchmarks/optimizer_quality.py
	$(BIN)/python benchmarks/prompt.py
	$(BIN)/python benchmarks/composition.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
