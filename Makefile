# Every target creates what it needs: a fresh machine runs `make demo` or `make test` directly.
# Every machine installs exactly the versions and hashes in requirements.lock; `make lock` upgrades
# it (and runs the suite under the new versions).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/policy/node_modules/.installed

.PHONY: demo test test-unit test-functional test-e2e test-policy bench lint lock clean

LOCK := requirements.lock
LOCK_INPUTS := pyproject.toml requirements/tools.in

$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

$(NODE_STAMP): tests/policy/package.json tests/policy/package-lock.json
	cd tests/policy && npm ci --no-audit --no-fund --silent
	touch $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/python demo/story.py

# Two workers by default (the CI machine has two cores), each with its own emulator; a test file
# stays on one worker, so its module-scoped stacks are built once.
WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile

test: $(STAMP) $(NODE_STAMP)
	$(PYTEST) tests

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-functional: $(STAMP)
	$(PYTEST) tests/functional

test-e2e: $(STAMP)
	$(PYTEST) tests/e2e

test-policy: $(STAMP) $(NODE_STAMP)
	$(PYTEST) tests/policy

bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/annex-admin template > /tmp/annex-template.json
	$(BIN)/cfn-lint /tmp/annex-template.json

lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --upgrade --generate-hashes --python-version 3.11 --extra test --extra sandbox -o $(LOCK) $(LOCK_INPUTS)
	$(MAKE) test

clean:
	rm -rf $(VENV) tests/policy/node_modules .demo
