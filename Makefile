# Two commands do everything on a fresh machine: `make demo` and `make test` (`make lint`: ruff, what CI runs
# first; `make lab`: JupyterLab on notebooks/ with the project's kernel). All create .venv and install the
# package (+dev extras) when it is missing or pyproject.toml changed. `make clean` removes what a rerun rebuilds
# (reports, sample, image cache) and never trained runs; `make clean-runs` removes those (runs/).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/sample
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint lab demo sample clean clean-runs

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
	test -f $(SAMPLE)/MURA-v1.1/train_image_paths.csv || $(BIN)/mura sample $(SAMPLE)

demo: $(STAMP) sample
	@start=$$(date +%s); \
	$(BIN)/mura reproduce --data-root $(SAMPLE) --out reports --profile demo && \
	echo && cat reports/comparison.md && echo && \
	echo "make demo: every notebook ran in $$(( $$(date +%s) - start )) s. SYNTHETIC sample: the numbers show the" && \
	echo "pipeline learns; they say nothing about real radiographs. Report: reports/index.md; executed notebooks:" && \
	echo "reports/runs/*.ipynb (06_error_analysis: the most confident mistakes, with Grad-CAM); trained runs: runs/demo-mura-sample."

# what a rerun rebuilds without training: the reports, the sample and its image cache. Trained runs live in
# runs/ (mura reproduce --runs-dir); a folder under reports/ that holds trained runs (versions before --runs-dir
# trained into reports/runs) is kept and named.
clean:
	@for entry in reports/* reports/.[!.]*; do \
	  if [ ! -e "$$entry" ] || [ "$$entry" = reports/README.md ]; then continue; fi; \
	  if [ -n "$$(find "$$entry" \( -name run.json -o -name '*.pt' \) -print | head -n 1)" ]; then \
	    echo "make clean: kept $$entry: it holds trained runs (move them to runs/, or delete them with make clean-runs)"; \
	  else rm -rf "$$entry"; fi; \
	done
	rm -rf $(SAMPLE) data/mura_cache

# trained runs: checkpoints, predictions and metrics (hours of GPU time on real data); says what it deletes.
# Also reports/runs when it holds runs (where versions before --runs-dir trained).
clean-runs:
	@for folder in runs reports/runs; do \
	  count=$$(find "$$folder" -name config.json 2>/dev/null | wc -l | tr -d ' '); \
	  if [ "$$folder" = reports/runs ] && [ "$$count" = 0 ]; then continue; fi; \
	  if [ ! -d "$$folder" ]; then continue; fi; \
	  echo "make clean-runs: deleting the trained runs in $$folder/ ($$count run folder(s))"; \
	  rm -rf "$$folder"; \
	done
