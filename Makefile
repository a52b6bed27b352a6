# Kennel's build. Two commands matter:
#   make run    builds everything and runs `runner run` on the default config
#   make test   prepares the machine (tests/prepare-machine), builds everything, runs every
#               test suite to its end and closes with one total (tests/run-suites)
#
# Check plugins are WebAssembly components built in their own workspaces (checks/, and
# tests/plugins/ for the plugins that exist to test the runner); each lands in
# target/plugins/<name>.wasm, where the runner looks for them by default.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGIN_TARGET_DIR := $(CURDIR)/target/wasm
PLUGIN_DIR := $(CURDIR)/target/plugins

.PHONY: all plugins runner run test bench fmt clean

all: plugins runner

plugins:
	@command -v cc >/dev/null 2>&1 || { echo "make: Rust links with the system's C compiler, and there is none: install gcc (apt-get install gcc libc6-dev), or run make test, which does" >&2; exit 1; }
	rustup target add $(WASM_TARGET) >/dev/null 2>&1 || rustup target list --installed | grep -qx $(WASM_TARGET)
	CARGO_TARGET_DIR=$(PLUGIN_TARGET_DIR) $(CARGO) build --release --target $(WASM_TARGET) --manifest-path checks/Cargo.toml
	CARGO_TARGET_DIR=$(PLUGIN_TARGET_DIR) $(CARGO) build --release --target $(WASM_TARGET) --manifest-path tests/plugins/Cargo.toml
	mkdir -p $(PLUGIN_DIR)
	cp $(PLUGIN_TARGET_DIR)/$(WASM_TARGET)/release/*.wasm $(PLUGIN_DIR)/

runner:
	$(CARGO) build --release --workspace

run: all
	./target/release/runner run --config kennel.yaml

# In this order whatever `-j` says: the build needs what the preparation installs.
test:
	tests/prepare-machine
	$(MAKE) --no-print-directory all
	CARGO="$(CARGO)" PLUGIN_TARGET_DIR="$(PLUGIN_TARGET_DIR)" tests/run-suites

bench: all
	$(CARGO) bench -p kennel-tests

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --all --manifest-path checks/Cargo.toml
	$(CARGO) fmt --all --manifest-path tests/plugins/Cargo.toml

clean:
	$(CARGO) clean
