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
# Mermaid from the npm registry renders `diff --format markdown`'s charts in the browser tests
# (tests/test_mermaid_render.py): fetched here once, pinned by version and by the registry's integrity
# hash, so the tests run offline. Without npm or the registry the tests skip and say why.
MERMAID_VERSION := 12.4.0
MERMAID_INTEGRITY := sha512-j2gvsGUFeS/53WdYLl9H5G2YtMZX9G/PlCvV3E5Pf4j5XSnK19DwazU6wki7OTcKeYKed7+qujRDLhy8NV2zBg==
MERMAID_JS := build/npm/mermaid-$(MERMAID_VERSION)/mermaid.min.js
# The subpackages, read from pyproject.toml (the one list); the root package is the repository's own *.py.
PACKAGES = $(shell $(PYTHON) -c "import tomllib; print(*(p.split('.')[1] for p in tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages'] if '.' in p))")

.PHONY: demo test lint typecheck pytest debs postgres mermaid bench clean

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

mermaid: $(MERMAID_JS)

$(MERMAID_JS):
	@command -v npm >/dev/null || { echo "npm not found: the Mermaid rendering tests will skip"; exit 0; }; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if ! npm pack --silent --pack-destination "$$tmp" mermaid@$(MERMAID_VERSION) >/dev/null; then \
	  echo "npm could not fetch mermaid@$(MERMAID_VERSION): the Mermaid rendering tests will skip"; exit 0; fi; \
	got="sha512-$$(openssl dgst -sha512 -binary "$$tmp"/mermaid-$(MERMAID_VERSION).tgz | base64 -w0)"; \
	if [ "$$got" != "$(MERMAID_INTEGRITY)" ]; then echo "mermaid-$(MERMAID_VERSION).tgz: integrity $$got, expected $(MERMAID_INTEGRITY)"; exit 1; fi; \
	tar -xzf "$$tmp"/mermaid-$(MERMAID_VERSION).tgz -C "$$tmp" package/dist/mermaid.min.js package/LICENSE && \
	mkdir -p $(@D) && mv "$$tmp"/package/LICENSE $(@D)/ && mv "$$tmp"/package/dist/mermaid.min.js $@

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

pytest: $(STAMP) postgres mermaid
	NETPOL_GEN_MERMAID_JS=$(abspath $(MERMAID_JS)) $(BIN)/pytest -n 2 -q tests

test: lint typecheck pytest

bench: $(STAMP)
	@echo "see bench/README.md"

clean:
	rm -rf $(VENV) build *.egg-info
