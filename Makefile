# Yagura — build, run and test.
#   make dev     start a manager and a local agent on embedded defaults
#   make test    install what the tests need (when missing) and run them all
#   make bench   run the benchmarks (see docs/benchmarks.md)

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build agent dev test test-deps vet bench bench-heartbeats bench-events bench-flows fuzz clean

all: build agent

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/yagura ./cmd/yagura

# The slim agent for hosts: no cgo, no manager packages, static.
agent:
	CGO_ENABLED=0 $(GO) build -tags agentonly -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/yagura-agent ./cmd/yagura

dev: build
	./bin/yagura dev

# make test is the whole suite: nothing may be skipped for a missing
# dependency (CI=true turns such skips into failures), so it installs them.
test: export CI = true
test: test-deps vet
	$(GO) test -race -timeout 30m ./...

test-deps:
	./scripts/test-deps.sh

vet:
	@out=$$(gofmt -l cmd internal); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags agentonly ./cmd/yagura

bench: test-deps
	$(GO) test -run '^$$' -bench . -benchmem ./...
	./scripts/bench-heartbeats.sh
	./scripts/bench-events.sh
	./scripts/bench-flows.sh

bench-heartbeats: test-deps
	./scripts/bench-heartbeats.sh

bench-events: test-deps
	./scripts/bench-events.sh

bench-flows: test-deps
	./scripts/bench-flows.sh

# Longer fuzzing of every fuzz target (FUZZTIME each).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin yagura-data yagura-sim
