# Two commands for a new user on Debian: `make run` and `make test`.
# Each installs what is missing (apt packages, the virtual environment, the package).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_RUN := handbrake-cli ffmpeg python3-venv
APT_TEST := chromium systemd fonts-dejavu-core redis-server iproute2 util-linux
APT_BENCH := nginx curl
CONFIG ?= config.toml

.PHONY: run test lint typecheck bench deps-run deps-test clean

run: deps-run $(VENV)/.run
	$(VENV)/bin/vidd serve --config $(CONFIG)

# Two workers: most tests wait on a daemon, a browser or HandBrake, so both cores stay busy.
test: deps-test $(VENV)/.test
	$(PY) -m pytest -n 2

lint: $(VENV)/.test
	$(VENV)/bin/ruff check vidd tests bench testkit
	$(VENV)/bin/mypy

bench: deps-test $(VENV)/.test
	$(call apt_install,$(APT_BENCH))
	$(PY) -m bench $(if $(CASE),--case $(CASE))

# Install only the Debian packages that are missing (dpkg knows), with one apt-get update.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps-run:
	$(call apt_install,$(APT_RUN))

deps-test:
	$(call apt_install,$(APT_RUN) $(APT_TEST))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run: pyproject.toml | $(VENV)/bin/python
	$(MAKE) deps-run
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(MAKE) deps-test
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.run

clean:
	rm -rf $(VENV) build *.egg-info tests/artifacts bench/results

-include systemd/install.mk
