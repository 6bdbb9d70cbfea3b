PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# constraints.txt pins the CPU torch build that lies on this project's machines; pass CONSTRAINTS= to drop it.
CONSTRAINTS ?= -c constraints.txt

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[dev,dask,pandas,onnx,skops]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/transferlab run mnist89-evasion-quick --out runs/demo --workers 2

test: $(BIN)/.installed
	$(BIN)/pytest -q -n 2

clean:
	rm -rf $(VENV) runs
