# `make demo` and `make test` work on a fresh machine: they create .venv and install what is needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test demo wheel-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[test,demo,ray]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(VENV)/bin/curate formats
	$(VENV)/bin/curate inspect fixtures/llava_small.json fixtures/sharegpt4v_small.json
	$(VENV)/bin/curate convert auto llava fixtures/llava_small.json fixtures/sharegpt4v_small.json \
		-o $(DEMO_OUT)/mix.jsonl
	$(VENV)/bin/curate dedup fixtures/dedup_demo.json -o $(DEMO_OUT)/dedup.json --image-root fixtures/images \
		--embedder timm-pool -t 0.85 -t 0.7 --cache $(DEMO_OUT)/cache --report $(DEMO_OUT)/report
	@echo "demo: converted $(DEMO_OUT)/mix.jsonl; deduplicated $(DEMO_OUT)/dedup.json;" \
		"report at $(DEMO_OUT)/report/report.html"

# Build the wheel, install it with its dependencies in a fresh venv, and run it from there.
wheel-check: setup
	rm -rf dist $(VENV)-wheel
	$(PIP) wheel --no-deps --no-build-isolation -w dist .
	$(PYTHON) -m venv $(VENV)-wheel
	$(VENV)-wheel/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(VENV)-wheel/bin/python -m pip install --quiet --disable-pip-version-check dist/curate-*.whl
	cd /tmp && $(CURDIR)/$(VENV)-wheel/bin/curate plugins > $(CURDIR)/dist/plugins.txt
	cat dist/plugins.txt && grep -q "llava .*curate" dist/plugins.txt
	cd /tmp && $(CURDIR)/$(VENV)-wheel/bin/curate convert llava llava $(CURDIR)/fixtures/llava_small.json \
		-o $(CURDIR)/dist/wheel-check.json --overwrite -q
	@echo "wheel-check: ok"

clean:
	rm -rf $(VENV) $(VENV)-wheel dist build $(DEMO_OUT) *.egg-info
