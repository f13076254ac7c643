# Every command the project runs; README and .ci/run call these targets.
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEV_STAMP := $(VENV)/.dev-installed
TEST_REQUIREMENTS := $(VENV)/requirements-test.txt

# PyO3 (cargo build/test/clippy) must see the same interpreter the extension is built for.
export PYO3_PYTHON := $(CURDIR)/$(VPY)

.PHONY: help dev build-dev build-release test test-rust test-python lint lint-rust lint-python format readme clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Installs maturin and the `test` extra of pyproject.toml; redone when pyproject.toml changes.
$(DEV_STAMP): pyproject.toml | $(VPY)
	$(VPY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['test']))" > $(TEST_REQUIREMENTS)
	$(VPY) -m pip install 'maturin>=1.5,<2' -r $(TEST_REQUIREMENTS)
	touch $@

dev: $(DEV_STAMP)  ## create .venv and install maturin and the test tools

build-dev: dev  ## build the extension in debug mode into .venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop

build-release: dev  ## build the extension optimised into .venv (for bench/)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release

# The Rust test binaries link libpython; point the loader at the venv interpreter's copy.
test-rust: dev  ## cargo test
	LD_LIBRARY_PATH="$$($(VPY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" cargo test

test-python: build-dev  ## pytest against the built extension
	$(VPY) -m pytest -q

test: dev build-dev test-rust test-python  ## build, then every Rust and Python test

lint-rust: dev  ## rustfmt and clippy
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

lint-python: dev  ## ruff
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench

lint: lint-rust lint-python  ## every linter, check only

format: dev  ## fix what the linters can fix
	$(VENV)/bin/ruff check --fix python tests bench
	$(VENV)/bin/ruff format python tests bench
	cargo fmt --all

readme:  ## regenerate the README's CLI reference from python/rustwsgi/config.py
	PYTHONPATH=python $(PYTHON) -c "import pathlib; from rustwsgi.config import reference_markdown; \
	p = pathlib.Path('README.md'); s = p.read_text(); \
	a, b = '<!-- cli-reference:begin -->', '<!-- cli-reference:end -->'; \
	p.write_text(s[:s.index(a) + len(a)] + '\n' + reference_markdown() + s[s.index(b):])"

clean:  ## remove build output (keeps .venv)
	cargo clean
	rm -f python/rustwsgi/*.so
