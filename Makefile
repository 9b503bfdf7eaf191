# Two commands do everything on a fresh machine: `make demo` and `make test` (`make lint`: ruff, what CI runs
# first; `make lab`: JupyterLab on notebooks/ with the project's kernel). All create .venv and install the
# package (+dev extras) when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/sample
# train patients per body part in the demo sample (~450 train / ~200 valid images): enough for every model to
# learn within `make demo`'s 10-minute budget on 2 CPU cores
DEMO_PATIENTS ?= 20
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint lab demo sample clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name mura --display-name "Python (mura)" >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# JupyterLab from the project's environment; pick the "Python (mura)" kernel (make install registers it)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

sample: $(STAMP)
	test -f $(SAMPLE)/MURA-v1.1/train_image_paths.csv || $(BIN)/mura sample $(SAMPLE) --patients-per-part $(DEMO_PATIENTS)

demo: $(STAMP) sample
	@start=$$(date +%s); \
	$(BIN)/mura reproduce --data-root $(SAMPLE) --out reports --profile demo && \
	echo && cat reports/comparison.md && echo && \
	echo "make demo: every notebook ran in $$(( $$(date +%s) - start )) s. SYNTHETIC sample: the numbers show the" && \
	echo "pipeline learns; they say nothing about real radiographs. Report: reports/index.md; executed notebooks:" && \
	echo "reports/runs/*.ipynb (06_error_analysis: the most confident mistakes, with Grad-CAM)."

clean:
	find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf runs data/sample data/mura_cache
