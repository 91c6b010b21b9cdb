# `make install` / `make uninstall`: vidd as a systemd service on this machine.
# Included by the top-level Makefile; also usable alone: make -f systemd/install.mk install
#
#   install    the vidd system user, a venv in /opt/vidd with vidd in it, /etc/vidd/config.toml
#              (only if there is none; data_dir = /var/lib/vidd) and the systemd unit.
#   uninstall  removes /opt/vidd and the unit; never the config, the data or the user.
#
# DESTDIR=dir stages the files under dir (for packaging, and the tests): no user is created
# and systemctl is not called. The venv's scripts then name dir/opt/vidd in their #! lines,
# as venvs always do, so a staged venv works in place, not after moving it.

PYTHON ?= python3
# Extra pip arguments for vidd itself.
VIDD_PIP_ARGS ?=
# The dependencies, pinned with hashes; empty skips them (the tests check the layout offline).
VIDD_LOCK ?= $(VIDD_SRC)/systemd/requirements.lock
# The config to install when /etc/vidd/config.toml does not exist yet.
VIDD_SRC := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
VIDD_CONFIG ?= $(VIDD_SRC)/config.toml

VIDD_VENV := $(DESTDIR)/opt/vidd
VIDD_ETC := $(DESTDIR)/etc/vidd
VIDD_UNIT := $(DESTDIR)/etc/systemd/system/vidd.service
VIDD_DATA := /var/lib/vidd
# Call systemctl only for a real install on a machine that runs systemd.
VIDD_SYSTEMD := $(if $(DESTDIR),,$(wildcard /run/systemd/system))

.PHONY: install uninstall

install:
ifeq ($(DESTDIR),)
	id -u vidd >/dev/null 2>&1 || useradd --system --user-group --home-dir $(VIDD_DATA) \
		--no-create-home --shell /usr/sbin/nologin --comment "vidd video daemon" vidd
else
	@echo "DESTDIR is set: not creating the vidd user, not calling systemctl"
endif
	$(PYTHON) -m venv $(VIDD_VENV)
ifneq ($(VIDD_LOCK),)
	$(VIDD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes --no-deps -r $(VIDD_LOCK)
endif
	$(VIDD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		$(VIDD_PIP_ARGS) $(VIDD_SRC)
	if [ -f $(VIDD_SRC)/README.md ]; then \
		install -m 0644 $(VIDD_SRC)/README.md $(VIDD_VENV)/README.md; fi
	install -d -m 0755 $(VIDD_ETC)
# Never overwrite an operator's config; a new one gets data_dir = /var/lib/vidd, and is
# root:vidd 0640 from its first byte (created by install -m, then filled), because it may
# hold web.token.
	if [ -e $(VIDD_ETC)/config.toml ]; then \
		echo "kept the existing $(VIDD_ETC)/config.toml"; \
	else \
		install -m 0640 /dev/null $(VIDD_ETC)/config.toml.new && \
		sed -E 's|^[[:space:]]*data_dir[[:space:]]*=.*|data_dir = "$(VIDD_DATA)"|' \
			$(VIDD_CONFIG) >> $(VIDD_ETC)/config.toml.new && \
		grep -q '^data_dir = "$(VIDD_DATA)"' $(VIDD_ETC)/config.toml.new && \
		$(if $(DESTDIR),true,chgrp vidd $(VIDD_ETC)/config.toml.new) && \
		mv $(VIDD_ETC)/config.toml.new $(VIDD_ETC)/config.toml; \
	fi
	install -D -m 0644 $(VIDD_SRC)/systemd/vidd.service $(VIDD_UNIT)
ifneq ($(VIDD_SYSTEMD),)
	systemctl daemon-reload
endif
	@echo
	@echo "vidd is installed in $(VIDD_VENV); its config is $(VIDD_ETC)/config.toml."
	@echo "Start it now and at every boot with:"
	@echo "    systemctl enable --now vidd"

uninstall:
ifneq ($(VIDD_SYSTEMD),)
	-systemctl disable --now vidd
endif
	rm -f $(VIDD_UNIT)
	rm -rf $(VIDD_VENV)
ifneq ($(VIDD_SYSTEMD),)
	systemctl daemon-reload
endif
	@echo "Kept $(VIDD_ETC)/config.toml, $(VIDD_DATA) and the vidd user; remove them by hand."
