# Two commands on a fresh machine:  `make demo` (example site) and `make test` (whole suite).
# `make matrix` runs the suite on each supported Django/Python pair (noxfile.py), one after another:
#   make matrix NOX='-s "tests(dj61-py313)"' PYTEST='-m "not browser" tests/test_api.py'
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST   ?= 127.0.0.1:8000
NOX    ?=
PYTEST ?=
FUZZ_CASES ?= 3000

.PHONY: install demo demo-wagtail test screenshots matrix lint fuzz

# torch is pinned on the same line as the packages that pull it in, so pip takes the
# CPU build instead of a multi-GB CUDA one (see docs/installation.md).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	cd example_project && ../$(BIN)/python manage.py demo --addrport $(HOST)

# The Wagtail example site (example_wagtail/): the sample photos as Wagtail images, already indexed.
demo-wagtail: $(STAMP)
	cd example_wagtail && ../$(BIN)/python manage.py demo --addrport $(HOST)

# The browser tests save their screenshots in a temporary folder: a test run changes no tracked file.
# The Wagtail integration's tests need Wagtail's apps: a second run with their own settings; the
# tasks framework's tests (a database task backend instead of in-process embedding) a third; the
# routed encoder's (a model with two text models) a run of its own.
test: $(STAMP)
	scripts/test-services
	env -u SEMANTIC_IMAGES_SCREENSHOTS $(BIN)/python -m pytest
	$(BIN)/python -m pytest tests/wagtail --ds=tests.wagtail.settings
	$(BIN)/python -m pytest tests/tasks_framework --ds=tests.tasks_framework.settings
	$(BIN)/python -m pytest tests/wagtail_custom --ds=tests.wagtail_custom.settings
	$(BIN)/python -m pytest tests/multilingual --ds=tests.multilingual.settings

# Refresh the documentation's screenshots (docs/img/admin-*.png, public-search.png, wagtail-*.png) from the
# browser tests.
screenshots: $(STAMP)
	scripts/test-services
	SEMANTIC_IMAGES_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/python -m pytest -m browser tests/test_browser_admin.py tests/test_browser_public.py
	SEMANTIC_IMAGES_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/python -m pytest -m browser tests/wagtail --ds=tests.wagtail.settings

matrix: $(STAMP)
	$(BIN)/nox $(NOX) -- $(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python scripts/check_layers.py
	PYTHONPATH=.:example_project DATABASE_URL=postgresql://localhost/unused $(BIN)/mypy

# schemathesis against a live server with a random seed (SEED=... to replay one), not part of `make test`:
# the example site's API, then (with Wagtail's apps) the Wagtail search API and Wagtail's images API v2
# (FUZZ_CASES each); both runs go to the end, and the target fails if either did.
fuzz: $(STAMP)
	scripts/test-services
	SEED=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "fuzz: $(FUZZ_CASES) cases, seed $$SEED"; \
	export SEMANTIC_IMAGES_FUZZ_CASES=$(FUZZ_CASES) SEMANTIC_IMAGES_FUZZ_SEED=$$SEED; failed=0; \
	$(BIN)/python -m pytest tests/test_api_schemathesis.py -k fuzz -s -q -p no:cacheprovider || failed=1; \
	$(BIN)/python -m pytest tests/wagtail/test_api_fuzz.py tests/wagtail/test_api_v2_fuzz.py --ds=tests.wagtail.settings \
		-k random_seed -s -q -p no:cacheprovider || failed=1; \
	exit $$failed
