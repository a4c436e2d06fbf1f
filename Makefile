# Tessera's two set-up commands (see README.md):
#   make demo    installs what is missing, builds, and shows the compiler at work
#   make check   installs what is missing, builds, and runs every test
BUILD_DIR ?= build
LLVM_PREFIX ?= /usr/lib/llvm-22
CMAKE_FLAGS ?=
TARGETS = attn-opt attn-viz attn-translate attn-nvrtc-check attn-lsp-server attn-import \
  TesseraUnitTests tessera-dynamic-dump \
  TesseraEmulatorTests TesseraFakeDriverTests \
  attn-docs tessera_runtime tessera-test-bundles

.PHONY: all deps configure build demo check docs bundles fuzz sanitize clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -G Ninja -S . -B $(BUILD_DIR) \
	  -DMLIR_DIR=$(LLVM_PREFIX)/lib/cmake/mlir \
	  -DLLVM_EXTERNAL_LIT=$(LLVM_PREFIX)/bin/lit \
	  -DTESSERA_WERROR=ON $(CMAKE_FLAGS) > $(BUILD_DIR).cmake.log 2>&1 \
	  || { cat $(BUILD_DIR).cmake.log; exit 1; }

build: configure
	ninja -C $(BUILD_DIR) $(TARGETS)

demo: build
	@scripts/demo.sh $(BUILD_DIR)

check: build
	@scripts/check.sh $(BUILD_DIR)

# Refreshes the committed reference documentation from the ODS definitions
# and the pictures of docs/patterns.md.
docs: build
	cp $(BUILD_DIR)/dialect/include/tessera/Dialect/Attn/AttnDialect.md docs/reference/AttnDialect.md
	scripts/doc-pictures.sh $(BUILD_DIR) docs/pictures

# CUDA bundles of the shipped patterns, for bench/gpu_check.sh on a GPU
# machine (which needs no MLIR): build/bundles/<pattern>/{bundle.cu,manifest.json}
bundles: build
	@for f in patterns/*.mlir; do \
	  n=$$(basename $$f .mlir); \
	  $(BUILD_DIR)/bin/attn-translate $$f -o $(BUILD_DIR)/bundles/$$n || exit 1; \
	  echo "$(BUILD_DIR)/bundles/$$n"; \
	done

# libFuzzer harnesses in build-fuzz/ (clang-22), each run FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_RUNS)

# The test suite under ASan+UBSan (build-asan/), then the threaded runtime
# and cache tests under TSan (build-tsan/).
sanitize:
	@scripts/sanitize.sh

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).cmake.log
