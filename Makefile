# `make install` installs only what is missing. torch comes first and pinned
# to the CPU build that these machines keep on disk (TORCH_PIN), because an
# unpinned `torch` would pull a multi-GB CUDA build. An already installed
# torch>=2.3 is kept as it is.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_PIN ?= torch==2.13.0
STAMP := .make/installed

.PHONY: install train test test-all lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch, sys; sys.exit(0 if tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 3) else 1)" 2>/dev/null \
		|| $(PIP) install "$(TORCH_PIN)"
	$(PIP) install -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

train: install
	$(PYTHON) train.py experiment=quick

test: install
	$(PYTHON) -m pytest

# The slow tests run sweeps through the launcher and sweeper plugins of the cluster extra.
test-all: install
	$(PIP) install -e ".[dev,cluster]"
	$(PYTHON) -m pytest -m ""

lint: install
	$(PYTHON) -m ruff check src tests bench train.py eval.py
	$(PYTHON) -m ruff format --check src tests bench train.py eval.py

clean:
	rm -rf .make .pytest_cache build src/*.egg-info
