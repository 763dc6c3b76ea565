# `make demo` and `make test` set up .venv/ first (once; again when setup.cfg or constraints.txt change).
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/python -m pip install --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "rkconvert needs Python 3.11 (rknn-toolkit2 2.5.0 ships cp311 wheels only); set PYTHON=")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) --no-deps rknn-toolkit2
	$(PIP) --no-deps open_clip_torch
	$(PIP) -e '.[test]'
	$(VENV)/bin/python -c 'import rknn.api, onnxruntime, diffusers'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/rkconvert build --target rk3588 --model demo

# The HTML report test renders report.html in Debian's Chromium.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) build
