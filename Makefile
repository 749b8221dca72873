# The two commands of the README:
#   make demo   the main job: `cnnkit train` with defaults on real Fashion-MNIST, then report
#   make test   the test suite (PyTorch CPU as the oracle)
# Both build their own virtual environment in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
FMNIST  = /usr/share/datasets/fashion-mnist

.PHONY: demo test bench data browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST ships as Debian's dataset-fashion-mnist package.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Debian's chromium: tests/viz/test_report.py opens report.html in a real headless browser.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

demo: $(VENV)/.installed data
	$(VENV)/bin/cnnkit train --out runs/demo

test: $(VENV)/.installed data browser
	$(PY) -m pytest -n 2 -q

# Every benchmark of issue 6, summed up in bench/RESULTS.md (1.5 minutes on the AVX-512 host, 5-10 on the earlier one).
bench: $(VENV)/.installed data
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
