# Cocoon build, test and demo entry points.
GO        ?= go
BIN       := bin
BINARIES  := $(notdir $(wildcard cmd/*))
TEST_FLAGS ?= -count=1 -timeout 30m
# Tools installed with go install (cosign) are found by the tests.
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build deps guest k8s-bins spire-bins otelcol-bins test test-short bench demo fuzz clean generate generate-operator images

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

# Everything: unit, integration and end-to-end tests (real binaries, real
# third-party tools). CI runs this.
deps:
	@bash scripts/install-deps.sh

# The VM guest: kernel and reproducible initramfs in build/guest.
guest:
	@OVMF=$(OVMF) bash scripts/build-guest.sh

# Container images (operator, node installer, KBS) and the guest image as OCI
# layouts in build/images, from static builds of ./cmd; no base image.
# Push: skopeo copy oci:build/images/NAME:latest docker://REGISTRY/NAME:TAG
images: guest
	$(GO) run ./operator/images/mkimages -o build/images

# Kubernetes v1.34.3's binaries (and helm) for the Kubernetes tests, built once from
# the Go module proxy into a cache outside the repository (several minutes
# the first time; nothing after).
k8s-bins:
	@bash scripts/build-k8s.sh
	@bash scripts/build-helm.sh

# spire-server and spire-agent v1.13.3, for running the cocoon NodeAttestor
# plugins against real SPIRE, built once from the Go module proxy into
# /var/cache/cocoon/spire (long: SPIRE links the cloud SDKs).
spire-bins:
	@bash scripts/build-spire.sh

# otelcol-owner (scripts/otelcol: the OpenTelemetry Collector's OTLP receiver
# writing to a file), the owner's endpoint in the telemetry tests, built once
# from the Go module proxy into /var/cache/cocoon/otelcol.
otelcol-bins:
	@bash scripts/build-otelcol.sh

test: deps build guest k8s-bins spire-bins otelcol-bins
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	COCOON_BIN=$(CURDIR)/$(BIN) $(GO) test $(TEST_FLAGS) ./...

test-short:
	$(GO) test -short ./...

# Throughput and latency benchmarks, each against a floor measured in the
# same run; see README "Performance".
bench: deps build guest otelcol-bins
	COCOON_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 2s -timeout 60m ./...

demo: deps build guest
	@bash scripts/demo.sh

# Run every fuzz target for FUZZTIME each.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Regenerate the committed ttrpc API code from protocol/ttrpc/**/*.proto
# (CI does not run protoc). Needs protoc (Debian protobuf-compiler); the Go
# plugins are pinned to the versions in go.mod.
# The operator's deepcopy code, CRDs and RBAC (controller-gen, pinned).
CONTROLLER_TOOLS ?= v0.23.0
generate-operator:
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS)
	$(BIN)/tools/controller-gen object paths=./operator/api/...
	$(BIN)/tools/controller-gen crd:allowDangerousTypes=false paths=./operator/api/... output:crd:artifacts:config=deploy/operator/crd
	$(BIN)/tools/controller-gen rbac:roleName=cocoon-operator paths=./operator/controllers/... output:rbac:artifacts:config=deploy/operator/rbac
	cp deploy/operator/crd/*.yaml deploy/helm/cocoon/crds/
	cp deploy/operator/rbac/role.yaml deploy/helm/cocoon/templates/operator-role.yaml

PROTOS := $(sort $(shell find protocol/ttrpc -name '*.proto'))
generate: generate-operator
	@command -v protoc >/dev/null || { echo "generate: install protoc (apt-get install protobuf-compiler libprotobuf-dev)"; exit 1; }
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$$($(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$$($(GO) list -m -f '{{.Version}}' github.com/containerd/ttrpc)
	PATH=$(CURDIR)/$(BIN)/tools:$$PATH protoc --proto_path=protocol/ttrpc --proto_path=/usr/include \
	  --go_out=protocol/ttrpc --go_opt=paths=source_relative \
	  --go-ttrpc_out=protocol/ttrpc --go-ttrpc_opt=paths=source_relative \
	  $(patsubst protocol/ttrpc/%,%,$(PROTOS))

clean:
	rm -rf $(BIN) build
