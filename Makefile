# Two commands do all the set-up: `make run` (pipeline on the built-in dataset) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast system-deps lint bench clean

setup: $(STAMP)

# torch first, pinned: 2.13.0 is a CPU build already on disk here; an unpinned torch would pull
# a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mmpipe run $(ARGS)

# Debian packages of the slow tests: chromium (tests/test_ui_browser.py drives it through
# Playwright; nothing downloads a browser) and postgresql (tests/test_tracking_server.py starts a
# throwaway cluster with its initdb). Nothing to do when both are there (for the browser:
# /usr/bin/chromium, or the binary MMPIPE_CHROMIUM names); else they are installed with apt-get,
# as root or through passwordless sudo; else make stops at once, one line saying what to install.
system-deps:
	@set -e; \
	pkgs=""; \
	if [ -n "$${MMPIPE_CHROMIUM:-}" ]; then \
	    [ -x "$$MMPIPE_CHROMIUM" ] || { echo "make test: MMPIPE_CHROMIUM=$$MMPIPE_CHROMIUM is not an executable file; set it to a Chromium binary, or unset it to use Debian's chromium" >&2; exit 1; }; \
	elif [ ! -x /usr/bin/chromium ]; then pkgs="chromium"; fi; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || pkgs="$${pkgs:+$$pkgs }postgresql"; \
	[ -n "$$pkgs" ] || exit 0; \
	what=$$(echo "$$pkgs" | sed 's/ / and /'); \
	case "$$pkgs" in chromium*) alt=" (or set MMPIPE_CHROMIUM to a Chromium binary)";; *) alt="";; esac; \
	if ! command -v apt-get >/dev/null; then \
	    echo "make test needs $$what, and this system has no apt-get: install $$what with its package manager$$alt" >&2; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then as=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then as="sudo -n"; \
	else echo "make test needs Debian's $$what: run \`sudo apt-get install $$pkgs\`$$alt" >&2; exit 1; fi; \
	echo "make test: installing Debian's $$what (apt-get)"; \
	$$as apt-get update -qq; \
	$$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs

test: system-deps $(STAMP)
	$(BIN)/ruff check mmcore tasks flows tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider $(ARGS)

# Everything but the slow end-to-end tests (real servers, browser, fault injection); CI runs all.
# Installs no system package: only slow tests need them.
test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline_overhead.py

clean:
	rm -rf runs .pytest_cache
