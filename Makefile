# breakglass: `make demo` builds, verifies and inspects the example image;
# `make test` installs what the tests use and runs lint, type-check and the suite.

VENV    ?= .venv
PY      := $(VENV)/bin/python
BG      := $(VENV)/bin/breakglass
SPEC    ?= images/example.yaml
DIST    ?= dist
SIGN_KEY ?= examples/keys/release
# git does not keep file modes, and ssh-keygen refuses a private key others can read
DEMO_PRIVATE := examples/keys/alice examples/keys/bob examples/keys/carol examples/keys/release

.PHONY: demo test test-e2e fuzz lint tools bench bytecode clean mutate mutate-ci

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(MAKE) bytecode
	touch $@

# Bytecode for the package and its libraries, written even under PYTHONDONTWRITEBYTECODE:
# without it every command recompiles what it imports (80-100 ms on each run).
bytecode:
	$(PY) -m compileall -q -j 0 builder $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null

tools:
	bash scripts/install-tools.sh

demo: $(VENV)/.installed tools bytecode
	@chmod 600 $(DEMO_PRIVATE)
	@out=$$($(BG) build $(SPEC) --out $(DIST) --sign-key $(SIGN_KEY) --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["image_dir"])') && \
	$(BG) verify $$out --allowed-signers examples/keys/allowed_signers && \
	$(BG) inspect $$out

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check builder tests bench
	$(VENV)/bin/ruff format --check builder tests bench
	$(VENV)/bin/mypy

test: $(VENV)/.installed tools lint
	@chmod 600 $(DEMO_PRIVATE)
	$(VENV)/bin/pytest -q

# every reader of untrusted input against 1,000,000 mutated inputs (tests/fuzz_targets.py)
FUZZ_TOTAL ?= 1000000
fuzz: $(VENV)/.installed
	$(PY) -m tests.fuzz_targets --total $(FUZZ_TOTAL)

test-e2e: $(VENV)/.installed tools
	@chmod 600 $(DEMO_PRIVATE)
	$(VENV)/bin/pytest -q -m e2e

# mutation testing of the security core (tests/mutation.toml); MODULES=builder/x.py for a subset
mutate: $(VENV)/.installed tools
	$(PY) scripts/mutate.py $(MODULES)

# what CI runs: the [ci] modules of tests/mutation.toml, each held to its floor
mutate-ci: $(VENV)/.installed tools
	$(PY) scripts/mutate.py --ci

bench: $(VENV)/.installed tools
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(DIST) .pytest_cache .mypy_cache .ruff_cache build/mutation
