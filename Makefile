# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create the venv and install what is missing (Debian packages included; run as root).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# graphviz lays out `netpol-gen map`; chromium (with a font) runs the map's browser tests.
# openssl makes the TLS tests' self-signed certificates.
DEB_PACKAGES := tcpdump libpcap0.8 iproute2 nftables iptables postgresql graphviz chromium fonts-dejavu-core openssl
# The subpackages, read from pyproject.toml (the one list); the root package is the repository's own *.py.
PACKAGES = $(shell $(PYTHON) -c "import tomllib; print(*(p.split('.')[1] for p in tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages'] if '.' in p))")

.PHONY: demo test lint typecheck pytest debs postgres bench clean

debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -m venv --help >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | debs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

postgres: debs
	@bash tests/ensure_postgres.sh

demo: $(STAMP)
	@bash examples/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# mypy cannot follow the editable install's package-dir mapping, so it checks a link tree laid
# out as the installed package is.
typecheck: $(STAMP)
	@rm -rf build/typecheck && mkdir -p build/typecheck/netpol_gen
	@for p in $(PACKAGES) *.py; do ln -s "$$PWD/$$p" build/typecheck/netpol_gen/$$p; done
	cd build/typecheck && ../../$(BIN)/mypy -p netpol_gen

pytest: $(STAMP) postgres
	$(BIN)/pytest -n 2 -q tests

test: lint typecheck pytest

bench: $(STAMP)
	@echo "see bench/README.md"

clean:
	rm -rf $(VENV) build *.egg-info
