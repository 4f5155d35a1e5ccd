# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out
STAMP  := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo demo-erm demo-post demo-erm-fit demo-erm-eval demo-erm-plot \
	demo-post-sample demo-post-eval demo-post-diagnose test test-all lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip byte-compiles every installed module one file at a time; compileall does the same
# on all cores: 17 s + 20 s against 49 s for one install on 2 cores (2026-12-08).  The
# byte code must be written at install time: with PYTHONDONTWRITEBYTECODE set (as on
# this machine), imports never cache it, and every command then paid 6-9 s more.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-compile
COMPILE_ALL := $(BIN)/python -m compileall -q -j 0 \
	$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
	|| echo "compileall: some modules were not byte-compiled (as pip, it goes on)"

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	$(COMPILE_ALL)
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e ".[dev]"
	$(COMPILE_ALL)
	touch $@ $(STAMP)

# The main job on the embedded local default: a small rate study (ERM and the Bayesian
# posterior mean, two d, two M) on a local pool of 2 processes, then one dataset
# through the whole command line: ERM fit, posterior, diagnostics and figures.
# The demo is small and compile-bound: XLA:CPU's loop emitters compile it ~1.5x faster
# (bayes_ips.use_loop_emitters; analyses/benchmarks/RESULTS.md).  DEMO_EMITTERS=fusion
# for XLA's default.  It also compiles without LLVM's optimisation passes, as the fast
# test tier does: the quick study's cells took 135 s of cell time against 195 s (study
# 81 s against 111 s of wall time, 2026-12-06), with the same errors to 6 digits
# (float64 throughout; only the rounding of fused multiply-adds differs).  DEMO_XLA_FLAGS=
# (empty) compiles as XLA's default does.  Programs compiled this way are cached apart
# (JAX's cache key holds the XLA flags), so they never serve a run with other flags.
DEMO_EMITTERS ?= loop
DEMO_XLA_FLAGS ?= --xla_backend_optimization_level=0
demo: export BAYES_IPS_XLA_EMITTERS = $(DEMO_EMITTERS)
demo: export XLA_FLAGS := $(strip $(DEMO_XLA_FLAGS) $(XLA_FLAGS))
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/bayes-ips study analyses/configs/quick.toml --out-dir $(OUT)/quick --processes 2
	$(BIN)/bayes-ips simulate --M 500 --N 6 --d 3 --rank 1 --phi tanh --noise 0.1 \
		--tokens cube --seed 0 --out $(OUT)/data.npz
	$(MAKE) --no-print-directory -j2 --output-sync=target demo-erm demo-post
	@echo "demo outputs in $(OUT)/: quick/ (rates.png, slopes.md, summary.md, results.nc)"
	@echo "  data.npz erm.nc erm_error.json erm_fit.png post.nc post_error.json diagnostics/"

# The demo dataset's commands, as a graph: fit-erm and sample need only the data, and
# each one's evaluate, plot or diagnose needs only its fit, so `make demo` runs them two at
# a time on the 2 cores (each command's output shown when it ends).  Seven commands one
# after another took 112 s (each pays ~8-10 s of imports and JAX's start; 2026-12-07, a
# slow day); two branches side by side 53 s, then the posterior's evaluate and diagnose
# started only after the other (2026-12-08).  demo-erm / demo-post run one branch.
demo-erm: demo-erm-eval demo-erm-plot
demo-post: demo-post-eval demo-post-diagnose

demo-erm-fit:
	$(BIN)/bayes-ips fit-erm $(OUT)/data.npz --rank 1 --seed 0 --out $(OUT)/erm.nc
demo-erm-eval: demo-erm-fit
	$(BIN)/bayes-ips evaluate $(OUT)/erm.nc --truth $(OUT)/data.npz --json $(OUT)/erm_error.json
demo-erm-plot: demo-erm-fit
	$(BIN)/bayes-ips plot $(OUT)/erm.nc --truth $(OUT)/data.npz --out $(OUT)/erm_fit.png

demo-post-sample:
	$(BIN)/bayes-ips sample $(OUT)/data.npz --rank 1 --seed 0 --out $(OUT)/post.nc
demo-post-eval: demo-post-sample
	$(BIN)/bayes-ips evaluate $(OUT)/post.nc --truth $(OUT)/data.npz --json $(OUT)/post_error.json
demo-post-diagnose: demo-post-sample
	$(BIN)/bayes-ips diagnose $(OUT)/post.nc --truth $(OUT)/data.npz --out-dir $(OUT)/diagnostics

# The fast tier (the default: statistical checks that take minutes are marked slow), in
# $(TEST_WORKERS) pytest-xdist workers, whole test files (or groups of files that share
# compiled programs, tests/conftest.py) to a worker; TEST_WORKERS=0: one process.
# The fast tier is compile-bound (tiny shapes, thousands of XLA programs), so it compiles
# cheaply: no LLVM optimisation passes, and XLA:CPU's older loop emitters instead of its
# MLIR fusion emitters, which take most of the compile time.  On test_pairwise, test_erm
# and test_kselect (one core, 2026-12-03): 145 s at the default, 60 s with both.  Still
# float64 with fast-math off; only the rounding of multiply-adds that LLVM would fuse
# (last bits) can differ, and tests/test_nuts.py builds its overflow case to hold either
# way.  `make test-all` (CI) compiles as users do.
TEST_WORKERS ?= 2
TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false
test: $(STAMP_DEV)
	XLA_FLAGS="$(TEST_XLA_FLAGS) $$XLA_FLAGS" \
		$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

# Everything, the slow tier included (what CI runs), in the same pytest-xdist workers,
# compiled at XLA's default settings, as users run it, but each worker on one XLA:CPU
# thread: with TEST_WORKERS processes on as many cores, XLA's default thread pools
# oversubscribe them.  Measured (2026-12-07, 2 cores): two concurrent runs of
# test_importance_sampling_and_nuts_give_the_same_posterior took > 420 s each at the
# default and 133-135 s with these flags (135 s for one run alone, two threads).
TEST_ALL_XLA_FLAGS ?= --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1
test-all: $(STAMP_DEV)
	XLA_FLAGS="$(TEST_ALL_XLA_FLAGS) $$XLA_FLAGS" \
		$(BIN)/python -m pytest -q --durations=15 -m "slow or not slow" -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP_DEV)
	$(BIN)/ruff check bayes_ips models analyses tests
	$(BIN)/ruff format --check bayes_ips models analyses tests

format: $(STAMP_DEV)
	$(BIN)/ruff format bayes_ips models analyses tests
	$(BIN)/ruff check --fix bayes_ips models analyses tests

bench: $(STAMP)
	$(BIN)/python analyses/benchmarks/bench_kernel.py

clean:
	rm -rf $(OUT) .pytest_cache
