# porthole: run `make` (or `make help`) to list the targets.
# The two commands a newcomer needs: `make lab` and `make test` (see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
PKG      := github.com/porthole-iot/porthole
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X $(PKG)/agent.Version=$(VERSION)
GOFLAGS_DEVICE := -trimpath -tags netgo,osusergo -ldflags '$(LDFLAGS)'

# Device targets: GOOS/GOARCH[/variant] -> dist/porthole-<name>.
CROSS_TARGETS := \
	linux-armv5:arm:GOARM=5 \
	linux-armv6:arm:GOARM=6 \
	linux-armv7:arm:GOARM=7 \
	linux-arm64:arm64: \
	linux-mips:mips:GOMIPS=softfloat \
	linux-mipsle:mipsle:GOMIPS=softfloat \
	linux-mips64:mips64:GOMIPS64=softfloat \
	linux-mips64le:mips64le:GOMIPS64=softfloat \
	linux-riscv64:riscv64: \
	linux-386:386:GO386=softfloat \
	linux-amd64:amd64:

##@ Everyday

.PHONY: help
help: ## list the targets (default)
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-z][a-zA-Z0-9_-]*:.*##/ {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: lab
lab: build ## run the whole path on this machine (broker, tunneld, agent, source proxy); Ctrl-C stops it
	bin/porthole-lab $(LABFLAGS)

.PHONY: test
test: deps ## install missing test prerequisites, then run every test tier
	$(GO) mod download
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...
	@# the end-to-end transfers at full size (they shrink under -race)
	$(GO) test -count=1 -timeout 10m -run "^TestEndToEnd" ./agent/tunnel/

##@ Building

.PHONY: build
build: ## host binaries into bin/
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X $(PKG)/agent.Version=$(VERSION)' -o bin/ ./agent/cmd/porthole
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./tools/tunneld/cmd/porthole-tunneld
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./tools/lab/cmd/porthole-lab

.PHONY: cross
cross: ## static device binaries for every target into dist/, with SHA256SUMS
	@mkdir -p dist
	@for t in $(CROSS_TARGETS); do \
		name=$${t%%:*}; rest=$${t#*:}; arch=$${rest%%:*}; env=$${rest#*:}; \
		echo "  $$name"; \
		env CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $$env $(GO) build $(GOFLAGS_DEVICE) -o dist/porthole-$$name ./agent/cmd/porthole; \
	done
	cd dist && sha256sum porthole-* > SHA256SUMS

.PHONY: size
size: cross ## device binary sizes against the budgets
	@printf '%-16s %10s %8s %8s  %s\n' target bytes MiB budget verdict
	@for f in dist/porthole-linux-*; do \
		name=$${f#dist/porthole-}; bytes=$$(stat -c %s $$f); \
		case $$name in linux-mipsle) budget=8.0;; linux-armv7) budget=7.5;; *) budget=-;; esac; \
		mib=$$(awk -v b=$$bytes 'BEGIN{printf "%.2f", b/1048576}'); \
		verdict=$$(awk -v m=$$mib -v b=$$budget 'BEGIN{ if (b=="-") print "-"; else if (m<=b) print "ok"; else print "OVER" }'); \
		printf '%-16s %10s %8s %8s  %s\n' $$name $$bytes $$mib $$budget $$verdict; \
	done

.PHONY: generate
generate: ## regenerate committed code (protobuf) with the pinned protoc-gen-go
	tools/deps.sh generate
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) generate ./...

##@ Quality

.PHONY: lint
lint: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

FUZZTIME ?= 10s
.PHONY: fuzz
fuzz: ## short run (FUZZTIME, default 10s) of every fuzz target
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

.PHONY: bench
bench: ## Go benchmarks (results go in docs/benchmarks.md by hand, with machine and date)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: deps
deps: ## install missing Debian packages the tests need (root + apt), else say what is missing
	tools/deps.sh test

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin dist
