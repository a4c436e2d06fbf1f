# Tessera's two set-up commands (see README.md):
#   make demo    installs what is missing, builds, and shows the compiler at work
#   make check   installs what is missing, builds, and runs every test
BUILD_DIR ?= build
LLVM_PREFIX ?= /usr/lib/llvm-22
CMAKE_FLAGS ?=
TARGETS = attn-opt attn-viz attn-translate attn-nvrtc-check TesseraUnitTests \
  attn-docs

.PHONY: all deps configure build demo check docs clean

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

# Refreshes the committed reference documentation from the ODS definitions.
docs: build
	cp $(BUILD_DIR)/dialect/include/tessera/Dialect/Attn/AttnDialect.md docs/reference/AttnDialect.md

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).cmake.log
