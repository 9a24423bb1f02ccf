# obmem — the two commands a newcomer needs, over CMake:
#   make demo    build and run the bundled examples: the allocator's statistics, a traced run of
#                a C program, then a Python script traced by the CPython module, and a Python
#                program profiled by `obmem run script.py` with its report
#   make test    build and run every test: Release, AddressSanitizer+UBSan, ThreadSanitizer
# and for developers: make build, make bench, make format, make clean.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-release test-asan test-tsan bench format clean

all: build

# Installs the Debian packages the build needs when they are missing (a fresh machine).
deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DOBMEM_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	@echo "== examples/demo_alloc.c on obmem, OBMEM_STATS=1: size classes, pools, arenas =="
	OBMEM_STATS=1 ./$(BUILD)/examples/demo_alloc
	@echo
	@echo "== examples/demo_trace.c traced by obmem run, then obmem report: leak, peak, temporaries =="
	./$(BUILD)/tools/obmem run -o $(BUILD)/demo_trace.cap -- ./$(BUILD)/examples/demo_trace
	./$(BUILD)/tools/obmem report --top 5 $(BUILD)/demo_trace.cap
	@if ls $(BUILD)/python/obmem*.so >/dev/null 2>&1; then \
	  echo; \
	  echo "== examples/python/trace.py with the CPython module: which lines allocate, now and at the peak =="; \
	  PYTHONPATH=$(BUILD)/python python3 examples/python/trace.py; \
	  echo; \
	  echo "== examples/python/leaky.py traced by obmem run, then obmem report: its leak and its peak =="; \
	  ./$(BUILD)/tools/obmem run -o $(BUILD)/demo_python.cap examples/python/leaky.py && \
	  ./$(BUILD)/tools/obmem report --top 5 $(BUILD)/demo_python.cap; \
	else \
	  echo "(the CPython module was not built: no CPython 3.11+ with headers; see docs/python.md)"; \
	fi

test-release: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test-asan: deps
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOBMEM_SANITIZE=address \
	  -DOBMEM_WERROR=ON >/dev/null
	cmake --build $(BUILD)-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1 \
	  ctest --test-dir $(BUILD)-asan --output-on-failure -j$(JOBS) -L quick

test-tsan: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOBMEM_SANITIZE=thread \
	  -DOBMEM_WERROR=ON >/dev/null
	cmake --build $(BUILD)-tsan -j$(JOBS)
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --test-dir $(BUILD)-tsan --output-on-failure -L quick

test: test-release test-asan test-tsan
	@echo "make test: all suites passed"

bench: build
	bash bench/run.sh
	bash bench/run_trace.sh
	# Python-level tracing against tracemalloc (scale 0.2: tracemalloc with 25 frames is ~45x)
	BENCH_SCALE=$${BENCH_SCALE:-0.2} bash bench/run_python_trace.sh

format:
	clang-format -i include/*.h include/obmem/*.h src/*.c src/*.h src/*/*.c src/*/*.h \
	  tests/*.c tests/*.h examples/*.c bench/*.c bench/*.h tools/obmem/*.c tools/obmem/*.h \
	  2>/dev/null || true

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan
