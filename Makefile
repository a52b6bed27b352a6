# Kennel's build. Two commands matter:
#   make run    builds everything and runs `runner run` on the default config
#   make test   prepares the machine (tests/prepare-machine), builds everything (the container
#               image and the Debian package too: their tests run them), runs every test suite
#               to its end and closes with one total (tests/run-suites)
#   make image  the container image kennel:dev; make deb: target/debian/kennel_*.deb
#
# Check plugins are WebAssembly components built in their own workspaces (checks/, and
# tests/plugins/ for the plugins that exist to test the runner); each lands in
# target/plugins/<name>.wasm, where the runner looks for them by default.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
PLUGIN_TARGET_DIR := $(CURDIR)/target/wasm
PLUGIN_DIR := $(CURDIR)/target/plugins
# What the image and the Debian package carry: the first-party checks, not the test plugins.
FIRST_PARTY_PLUGINS := $(patsubst checks/%/Cargo.toml,%,$(wildcard checks/*/Cargo.toml))
IMAGE ?= kennel:dev

.PHONY: all plugins runner run image deb test bench fmt clean

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

# The container image (deploy/image/), built locally from the release runner: no registry.
image: all
	deploy/image/stage target/release/runner $(PLUGIN_DIR) target/image $(FIRST_PARTY_PLUGINS)
	docker build --quiet --tag $(IMAGE) target/image

# The Debian package (deploy/debian/), with cargo-deb (`cargo install cargo-deb`), from the
# release runner already built: target/debian/kennel_<version>-1_amd64.deb.
deb: all
	$(CARGO) deb --package kennel-runner --no-build --strip --output target/debian/

# In this order whatever `-j` says: the build needs what the preparation installs. The image
# and the package are built too: their end-to-end tests install and run them.
test:
	tests/prepare-machine
	$(MAKE) --no-print-directory all image deb
	CARGO="$(CARGO)" PLUGIN_TARGET_DIR="$(PLUGIN_TARGET_DIR)" tests/run-suites

bench: all
	$(CARGO) bench -p kennel-tests

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --all --manifest-path checks/Cargo.toml
	$(CARGO) fmt --all --manifest-path tests/plugins/Cargo.toml

clean:
	$(CARGO) clean
