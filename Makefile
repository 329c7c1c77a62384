# Convenience targets; the scripts are the source of truth and run without make.
#   make packages        .deb and .rpm into dist/ (scripts/packages.sh)
#   make units-check     systemd-analyze security (exposure <= 1.5) and verify
#   make ci-packaging    build, lint, install, run, purge (root; scripts/ci-packaging.sh)
#   make test            the whole test suite (scripts/test.sh)
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build packages units-check ci-packaging test clean

all: build

build:
	CGO_ENABLED=1 go build -trimpath -o bin/ ./cmd/vaultd ./cmd/vaultctl

packages:
	scripts/packages.sh

units-check:
	scripts/ci-packaging.sh --units-only

ci-packaging:
	scripts/ci-packaging.sh

test:
	scripts/test.sh

clean:
	rm -rf bin dist
