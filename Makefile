# The two commands a new user needs:
#   make run    set up, create ./.medvault on first run, start the daemon (local backend)
#   make test   set up, build Kubo + IPFS Cluster, run the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA_DIR ?= .medvault
LISTEN   ?= 127.0.0.1:7420
FUZZ_SECONDS ?= 15
FUZZ_TARGETS ?= car manifest envelope metadata share range cursor fhir fhir_rest

.PHONY: run test ipfs schema venv bench bench-ipfs bench-sharing bench-search clean fuzz

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
	$(BIN)/python bench/ceiling.py

bench-ipfs: venv ipfs
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python bench/ipfs.py

bench-search: venv
	$(BIN)/python bench/search.py --records $(or $(RECORDS),1000000)

bench-sharing: venv ipfs
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python bench/sharing.py

# Coverage-guided fuzzing of every parser of outside input (atheris), each for
# FUZZ_SECONDS; a crash stops the run and leaves its input in fuzz/crashes/.
fuzz: venv
	$(BIN)/pip install --quiet -e '.[fuzz]'
	mkdir -p fuzz/crashes
	for target in $(FUZZ_TARGETS); do \
		echo "== fuzz_$$target ($(FUZZ_SECONDS) s)"; \
		$(BIN)/python fuzz/fuzz_$$target.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=1024 \
			-artifact_prefix=fuzz/crashes/$$target- > fuzz/crashes/$$target.log 2>&1 \
			|| { tail -n 40 fuzz/crashes/$$target.log; exit 1; }; \
		tail -n 1 fuzz/crashes/$$target.log; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
