# rls3_ros — the two commands of the README, and a few more.
#   make run    set up (idempotent) and run the main job on the embedded default
#   make test   set up (idempotent) and run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: setup run test quick bench bench-quick sheet clean

setup:
	@bash tools/setup.sh

run: setup
	$(VENV)/bin/rls3 train

quick: setup
	$(VENV)/bin/rls3 train --quick

test: setup
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/rls3 bench learning && $(VENV)/bin/rls3 bench speed

bench-quick: setup
	$(VENV)/bin/rls3 bench learning --quick && $(VENV)/bin/rls3 bench speed --quick

sheet: setup
	$(VENV)/bin/rls3 sim sheet --out docs/images/contact_sheet.png

clean:
	rm -rf $(VENV) build .pytest_cache
