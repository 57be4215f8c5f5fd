# The README's two commands live here: `make demo` runs the main job, `make test` passes the tests.
# Both create and fill a virtual environment first (.venv, or VENV=...).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair these machines carry on disk; override on other machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# DATA=/path/to/oxford_flowers102 runs the demo from a local image folder instead of tfds.
DATA ?=
WORKDIR ?= runs/demo
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS) -e ".[torch,test]"
	touch $@

demo: venv
	$(PY) -m jaxft.main --config configs/demo.py --workdir $(WORKDIR) \
	  $(if $(DATA),--config.dataset.name=folder:$(abspath $(DATA)))

test: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) runs
