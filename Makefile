# The two commands a new user needs:
#   make run    set up, create ./.medvault on first run, start the daemon (local backend)
#   make test   set up, build Kubo + IPFS Cluster, run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA_DIR ?= .medvault
LISTEN   ?= 127.0.0.1:7420

.PHONY: run test ipfs schema venv bench bench-ipfs bench-sharing bench-search clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: venv
	@test -f $(DATA_DIR)/config.json || $(BIN)/medvault init --data-dir $(DATA_DIR)
	$(BIN)/medvault daemon --data-dir $(DATA_DIR) --listen $(LISTEN)

ipfs:
	bash scripts/install-ipfs.sh

schema:
	bash scripts/install-compose-schema.sh

test: venv ipfs schema
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/pytest -q $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/ingest.py

bench-ipfs: venv ipfs
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python bench/ipfs.py

bench-search: venv
	$(BIN)/python bench/search.py --records $(or $(RECORDS),1000000)

bench-sharing: venv ipfs
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python bench/sharing.py

clean:
	rm -rf $(VENV) .pytest_cache
