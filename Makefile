# Entry points. `make demo` and `make test` install what they need, build Release and run.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all deps configure build test demo bench asan clean install firmware-test

all: build

deps:
	bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The C pose decoder cross-compiled for the MAX78000's Cortex-M4F and run under QEMU (mps2-an386):
# it must print exactly the host's people (tests/export/test_pose_c.cpp, docs/deploy.md).
firmware-test: configure
	bash scripts/install-deps.sh --firmware
	cmake --build $(BUILD) -j $(JOBS) --target test_export
	POSEKD_FIRMWARE_TEST=1 $(BUILD)/test_export --gtest_also_run_disabled_tests --gtest_filter='Firmware.*'

demo: build
	$(BUILD)/posekd demo --out demo-out

# Installs the program as $(PREFIX)/bin/posekd (builds it first if needed).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	cmake --build $(BUILD) -j $(JOBS) --target benchmarks
	$(BUILD)/posekd bench
	$(BUILD)/bench_data
	$(BUILD)/bench_train

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, in their own build folder. Any finding
# fails its test: ASan and LeakSanitizer by default, UBSan through halt_on_error.
asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSEKD_SANITIZE=ON -DPOSEKD_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) build-asan

# Fuzzing (owner: robust; docs/robustness.md): libFuzzer + ASan + UBSan with clang, in build-fuzz.
# Longer runs: make fuzz FUZZ_TIME=600; extra libFuzzer flags: FUZZ_FLAGS=-detect_leaks=0
FUZZ_TIME ?= 20
FUZZ_TARGETS = fuzz_coco_json fuzz_torch_file fuzz_image
.PHONY: fuzz kill-test
fuzz:
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DPOSEKD_FUZZ=ON -DPOSEKD_BUILD_TESTS=OFF -DPOSEKD_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	mkdir -p build-fuzz/artifacts
	rc=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  build-fuzz/$$t -max_total_time=$(FUZZ_TIME) -rss_limit_mb=4096 -timeout=30 -max_len=16384 $(FUZZ_FLAGS) \
	    -artifact_prefix=build-fuzz/artifacts/$$t- build-fuzz/corpus/$$t fuzz/corpus/$$t || rc=1; \
	done; exit $$rc

# SIGKILL/resume test (scripts/kill_test.sh) with the program in $(BUILD); N kills (default 20).
KILLS ?= 20
kill-test:
	POSEKD=$(BUILD)/posekd bash scripts/kill_test.sh $(KILLS)
