# Cocoon build, test and demo entry points.
GO        ?= go
BIN       := bin
BINARIES  := $(notdir $(wildcard cmd/*))
TEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all build deps test test-short bench demo fuzz clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

# Everything: unit, integration and end-to-end tests (real binaries, real
# third-party tools). CI runs this.
deps:
	@bash scripts/install-deps.sh

test: deps build
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	COCOON_BIN=$(CURDIR)/$(BIN) $(GO) test $(TEST_FLAGS) ./...

test-short:
	$(GO) test -short ./...

# Throughput and latency benchmarks, each against a floor measured in the
# same run; see README "Performance".
bench: deps build
	COCOON_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 2s -timeout 60m ./...

demo: build
	@bash scripts/demo.sh

# Run every fuzz target for FUZZTIME each.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)
