# porthole: run `make` (or `make help`) to list the targets.
# The two commands a newcomer needs: `make lab` and `make test` (see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
PKG      := github.com/porthole-iot/porthole
# The commit, -dirty when a tracked file is changed or an untracked one would be
# built in (git describe --dirty sees only the first). Only from this tree's own
# repository: a copy of it inside another (a firmware's) would describe that one.
# Outside it, .version's, which git archive fills in (.gitattributes), else dev.
# Given on the command line (make cross VERSION=1.2.0), never from the environment.
OWN_GIT  := $(shell p=$$(git rev-parse --show-prefix 2>/dev/null) && [ -z "$$p" ] && echo yes)
VERSION  := $(shell if [ -n "$(OWN_GIT)" ]; then v=$$(git describe --tags --always --dirty 2>/dev/null) || v=dev; \
	case $$v in (dev|*-dirty) ;; (*) [ -z "$$(git ls-files --others --exclude-standard 2>/dev/null | head -1)" ] || v=$$v-dirty;; esac; \
	else v=$$(sed -n '1{/^\$$Format/d;/^%/d;p;}' .version 2>/dev/null); [ -n "$$v" ] || v=$$(sed -n '2{/^\$$Format/d;p;}' .version 2>/dev/null); fi; \
	echo $${v:-dev})
# The build time is the last commit's (UTC, RFC 3339): reproducible, and a floor the
# agent uses to tell an unset clock (notify.BuildTime). Outside the repository,
# SOURCE_DATE_EPOCH's if set, else that of the commit git archive exported.
BUILD_TIME := $(if $(OWN_GIT),$(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null),$(shell \
	e=$${SOURCE_DATE_EPOCH:-$$(sed -n '3{/^\$$Format/d;p;}' .version 2>/dev/null)}; [ -z "$$e" ] || date -u -d @$$e +%Y-%m-%dT%H:%M:%SZ))
LDFLAGS  := -s -w -X $(PKG)/agent.Version=$(VERSION) $(if $(BUILD_TIME),-X $(PKG)/agent/notify.BuildTime=$(BUILD_TIME))
# Inlining is kept only where it pays (agent/cmd/porthole/device.gcflags says why).
DEVICE_GCFLAGS := $(addprefix -gcflags=,$(shell grep -v '^\#' agent/cmd/porthole/device.gcflags))
# Reproducible whatever the builder's go env says: no VCS stamp (which names the
# commit of any git repository the tree sits in, a firmware's), and the modules
# go.sum checks (never a vendor/ directory left in the tree).
GOFLAGS_DEVICE := -trimpath -buildvcs=false -mod=readonly -tags netgo,osusergo $(DEVICE_GCFLAGS) -ldflags '$(LDFLAGS)'
# The device's GOEXPERIMENT (agent/cmd/porthole/device.goexperiment says why): its
# experiments this Go knows, joined by commas; each one it does not know is left
# out with a warning. Expanded where a device build uses it, not for every make.
DEVICE_GOEXPERIMENT = $(shell known=; \
	for e in $$(sed -n '/^[^\#]/p' agent/cmd/porthole/device.goexperiment | tr , ' '); do \
	if GOEXPERIMENT=$$e $(GO) env GOEXPERIMENT >/dev/null 2>&1; then known=$${known:+$$known,}$$e; \
	else echo "warning: $$($(GO) env GOVERSION) does not know GOEXPERIMENT=$$e (agent/cmd/porthole/device.goexperiment): the device binary is built without it, larger or with more idle memory" >&2; fi; \
	done; echo "$$known")

# Device targets: GOOS/GOARCH[/variant] -> dist/porthole-<name>. Each names its CPU
# level, so that none comes from the builder's environment or go env -w
# (GOAMD64=v3 there made an amd64 binary that x86 routers without AVX2 cannot run).
CROSS_TARGETS := \
	linux-armv5:arm:GOARM=5 \
	linux-armv6:arm:GOARM=6 \
	linux-armv7:arm:GOARM=7 \
	linux-arm64:arm64:GOARM64=v8.0 \
	linux-mips:mips:GOMIPS=softfloat \
	linux-mipsle:mipsle:GOMIPS=softfloat \
	linux-mips64:mips64:GOMIPS64=softfloat \
	linux-mips64le:mips64le:GOMIPS64=softfloat \
	linux-riscv64:riscv64:GORISCV64=rva20u64 \
	linux-386:386:GO386=softfloat \
	linux-amd64:amd64:GOAMD64=v1

##@ Everyday

.PHONY: help
help: ## list the targets (default)
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-z][a-zA-Z0-9_-]*:.*##/ {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: version
version: ## print the version and build time that builds would carry
	@echo "$(VERSION) $(BUILD_TIME)"

# The lab is make's own child (bash -c execs a lone command), so that it stops
# when make is killed (porthole-lab's stopWithMake).
.PHONY: lab
lab: build ## run the whole path on this machine (broker, tunneld, agent, source proxy); Ctrl-C stops it
	bin/porthole-lab $(LABFLAGS)

.PHONY: test
test: deps console-assets ## install missing test prerequisites, then run every test tier
	$(GO) mod download
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...
	@# the end-to-end transfers at full size (they shrink under -race)
	$(GO) test -count=1 -timeout 10m -run "^TestEndToEnd" ./agent/tunnel/
	@# tier 3: unit tests of agent/tunnel, agent/notify, sshd under qemu-user (arm v7, arm64, mips, mipsle, mips64)
	tools/qemu-test.sh
	@# tier 4: boot every QEMU board and log in through a tunnel (board/)
	PORTHOLE_BOARD_TEST=1 $(GO) test -count=1 -timeout 12m ./board/
	@# and the lab with its agent in a board (porthole-lab --board qemu-aarch64-virt)
	PORTHOLE_BOARD_TEST=1 $(GO) test -count=1 -timeout 5m -run '^TestLabBoardAsAUserRunsIt$$' ./tools/lab/

##@ Building

.PHONY: build
build: ## host binaries into bin/ (the web console's xterm.js too, when npm can fetch it)
	@$(MAKE) --no-print-directory console-assets || echo "make build: warning: xterm.js not fetched (npm); the lab runs without the web console" >&2
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X $(PKG)/agent.Version=$(VERSION)' -o bin/ ./agent/cmd/porthole
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./tools/tunneld/cmd/porthole-tunneld
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./tools/lab/cmd/porthole-lab
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./tools/console/cmd/porthole-console

# The web console's third-party browser files (xterm.js) come from npm, pinned by
# package-lock.json, and are copied into tools/console/web/vendor (gitignored), which
# the console embeds; so this runs before any Go build of tools/console that should
# serve a working page.
CONSOLE_WEB := tools/console/web
.PHONY: console-assets
console-assets: $(CONSOLE_WEB)/vendor/xterm.js ## xterm.js for the web console: npm ci, copied into tools/console/web/vendor

$(CONSOLE_WEB)/vendor/xterm.js: $(CONSOLE_WEB)/package-lock.json $(CONSOLE_WEB)/vendor.mjs
	tools/deps.sh console
	cd $(CONSOLE_WEB) && npm ci --no-audit --no-fund && npm run --silent vendor
	@touch $@

.PHONY: cross
cross: ## static device binaries for every target into dist/, with their licenses (porthole-LICENSE, porthole-linux.THIRD_PARTY_NOTICES: every target links the same modules) and SHA256SUMS
	@mkdir -p dist
	@# an earlier build's binaries would go into make dist's and make ipk's packages
	rm -f dist/porthole-linux-*
	@[ "$(VERSION)" != dev ] || echo "make cross: warning: neither porthole's git checkout nor a git archive export of it: the binaries say version dev (make cross VERSION=...)" >&2
	@[ -z "$(RELEASE_GO)" ] || [ "$$($(GO) env GOVERSION)" = "$(RELEASE_GO)" ] || echo "make cross: warning: built with $$($(GO) env GOVERSION), not $(RELEASE_GO), the Go to build releases with (docs/firmware.md): GOTOOLCHAIN=$(RELEASE_GO) make cross" >&2
	@exp='$(DEVICE_GOEXPERIMENT)'; $(call device-build,$(CROSS_TARGETS),dist,$$exp)
	cp LICENSE dist/porthole-LICENSE
	tools/pkg/notices.sh >dist/porthole-linux.THIRD_PARTY_NOTICES
	tools/pkg/sums.sh dist

# The Go to build releases with: its standard library has the fixes docs/firmware.md
# lists. make cross warns when built with another (RELEASE_GO= turns that off).
RELEASE_GO ?= go1.26.10

# porthole connect for operators' machines (the device agent is Linux only).
OPERATOR_TARGETS := darwin-arm64 darwin-amd64 windows-amd64 windows-arm64 freebsd-amd64

.PHONY: operator
operator: ## porthole connect for macOS, Windows and FreeBSD into dist/ (the agent is Linux only), each with its THIRD_PARTY_NOTICES, and SHA256SUMS
	@mkdir -p dist
	@for t in $(OPERATOR_TARGETS); do \
		os=$${t%%-*}; arch=$${t#*-}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "  $$t"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOAMD64=v1 GOARM64=v8.0 $(GO) build -trimpath -buildvcs=false -mod=readonly -ldflags '$(LDFLAGS)' -o dist/porthole-$$t$$ext ./agent/cmd/porthole && \
		NOTICES_GOOS=$$os NOTICES_GOARCH=$$arch tools/pkg/notices.sh >dist/porthole-$$t.THIRD_PARTY_NOTICES || exit 1; \
	done
	cp LICENSE dist/porthole-LICENSE
	tools/pkg/sums.sh dist

# $(call device-build,TARGETS,DIR,GOEXPERIMENT[,ENV]): shell code that builds the
# device binary of each of TARGETS (entries of CROSS_TARGETS) into
# DIR/porthole-<name>, with ENV (VAR=value ...) added to go build's environment.
device-build = for t in $(1); do \
		name=$${t%%:*}; rest=$${t\#*:}; arch=$${rest%%:*}; env=$${rest\#*:}; \
		echo "  $$name"; \
		env $(4) CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOEXPERIMENT=$(3) $$env $(GO) build $(GOFLAGS_DEVICE) -o $(2)/porthole-$$name ./agent/cmd/porthole; \
	done

.PHONY: device-gcflags
device-gcflags: ## print the device build's -gcflags (agent/cmd/porthole/device.gcflags)
	@echo $(DEVICE_GCFLAGS)

.PHONY: device-goexperiment
device-goexperiment: ## print the device build's GOEXPERIMENT (agent/cmd/porthole/device.goexperiment): the experiments this Go knows
	@echo $(DEVICE_GOEXPERIMENT)

# make size SIZE_BENCH=0: the binaries only, without the minute of tools/bench.
SIZE_BENCH ?= 1
# make size also builds the budgeted binaries with NEXT_GO, the newest Go the device
# build was measured with besides go.mod's (docs/size.md), which the go command
# fetches from the Go module proxy (GOTOOLCHAIN); `make size NEXT_GO=` skips it.
NEXT_GO ?= go1.27.3
BUDGET_TARGETS := $(filter linux-mipsle:% linux-armv7:%,$(CROSS_TARGETS))
.PHONY: size
size: cross ## the budgets: device binary sizes (also built with NEXT_GO), the biggest packages of the mipsle binary, agent memory and throughput (tools/bench/budgets.sh)
	@mkdir -p bin/size
	CGO_ENABLED=0 GOOS=linux GOARCH=mipsle GOMIPS=softfloat GOEXPERIMENT=$(DEVICE_GOEXPERIMENT) $(GO) build -trimpath -tags netgo,osusergo $(DEVICE_GCFLAGS) \
		-ldflags '-X $(PKG)/agent.Version=$(VERSION)' -o bin/size/porthole-linux-mipsle ./agent/cmd/porthole
	@rm -rf bin/size/next bin/size/bench.txt
	@if [ -z "$(NEXT_GO)" ]; then :; elif GOTOOLCHAIN=$(NEXT_GO) $(GO) version >/dev/null; then \
		echo "the budgeted targets with $(NEXT_GO):"; mkdir -p bin/size/next; \
		exp=$$($(MAKE) -s --no-print-directory device-goexperiment GO='GOTOOLCHAIN=$(NEXT_GO) $(GO)'); \
		$(call device-build,$(BUDGET_TARGETS),bin/size/next,$$exp,GOTOOLCHAIN=$(NEXT_GO)); \
	else echo "make size: the go command cannot run $(NEXT_GO) (above): its sizes are not measured" >&2; fi
	$(if $(filter 1,$(SIZE_BENCH)),tools/bench/budgets.sh bin/size/bench.txt)
	$(GO) run ./tools/sizereport -dist dist -nm bin/size/porthole-linux-mipsle -top 15 $(if $(filter 1,$(SIZE_BENCH)),-bench bin/size/bench.txt) \
		$(if $(NEXT_GO),-next bin/size/next)

# make idle-layout LAYOUTFLAGS='-bin FILE': an unstripped binary built already.
.PHONY: idle-layout
idle-layout: ## which 64 KiB windows of the mipsle binary's code an idle agent touches (qemu-user trace, tools/idlelayout; docs/size.md)
	tools/deps.sh qemu
	$(GO) run ./tools/idlelayout $(LAYOUTFLAGS)

# Packages: OpenWrt .ipk per IPK_ARCH, tarballs per cross target (tools/pkg). cross, ipk
# and dist each end with tools/pkg/sums.sh: dist/SHA256SUMS covers every artifact
# in dist/, whichever ran last.
# IPK_ARCH, not ARCH: a cross-compiling environment often exports ARCH (the
# kernel's, mips or arm), which is no OpenWrt package architecture.
IPK_ARCHS := mipsel_24kc mips_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53
IPK_ARCH ?= $(IPK_ARCHS)

.PHONY: ipk
ipk: cross ## OpenWrt packages (opkg, OpenWrt up to 24.10) into dist/ (IPK_ARCH=mipsel_24kc ...; default: all four)
	tools/deps.sh pkg
	@for a in $(IPK_ARCH); do tools/pkg/ipk.sh "$$a" "$(VERSION)" dist; done
	tools/pkg/sums.sh dist

.PHONY: dist
dist: cross ## a tar.gz per cross target (binary, systemd unit, SysV init, example config, licenses) into dist/
	GO="$(GO)" tools/pkg/tarball.sh "$(VERSION)" dist
	tools/pkg/sums.sh dist

BOARD ?= qemu-armv7-virt
.PHONY: board
board: ## build BOARD's initramfs, boot it in QEMU and log in through a tunnel (BOARD=qemu-armv7-virt)
	tools/deps.sh board
	PORTHOLE_BOARD_TEST=1 PORTHOLE_BOARDS=$(BOARD) $(GO) test -count=1 -v -timeout 10m -run '^TestBoards$$' ./board/

.PHONY: generate
generate: ## regenerate committed code (protobuf) with the pinned protoc-gen-go
	tools/deps.sh generate
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) generate ./...

##@ Quality

# staticcheck at a pinned version, from the Go module proxy (not in go.mod);
# about 3 minutes the first time on 2 cores, seconds after.
STATICCHECK_VERSION := v0.8.2

.PHONY: lint
lint: ## gofmt check, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@# porthole connect runs on macOS and Windows too: its package's tests build there
	GOOS=windows $(GO) vet ./agent/tunnel/...
	GOOS=darwin $(GO) vet ./agent/tunnel/...
	@# the console, tunneld and the porthole command (connect, flock_windows.go) have code
	@# for other systems too; their tests need sshd, which is Linux-only, so these builds,
	@# not vet, check that code
	GOOS=darwin $(GO) build -o /dev/null ./tools/console/... ./tools/tunneld/... ./agent/cmd/porthole
	GOOS=windows $(GO) build -o /dev/null ./tools/console/... ./tools/tunneld/... ./agent/cmd/porthole
	@# every device architecture's code (syscall numbers and structs differ): make cross,
	@# which builds them, is not part of make test
	@set -e; for t in $(CROSS_TARGETS); do a=$${t#*:}; a=$${a%%:*}; echo "GOARCH=$$a go vet ./agent/... ./sshd/..."; GOARCH=$$a $(GO) vet ./agent/... ./sshd/...; done

FUZZJOBS ?= 1
FUZZTIME ?= 10s
.PHONY: fuzz
fuzz: ## every fuzz target for FUZZTIME (default 10s), FUZZJOBS (default 1) at a time; one summary line each
	FUZZTIME=$(FUZZTIME) JOBS=$(FUZZJOBS) GO=$(GO) tools/fuzz/run.sh

.PHONY: bench
bench: ## Go benchmarks, then the whole path against direct SSH (tools/bench/run.sh; figures in docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /tools/bench)
	tools/deps.sh bench
	tools/bench/run.sh

# make vulncheck: govulncheck at a pinned version, against the Go vulnerability
# database as the golang.org/x/vulndb module has it at a pinned version (its OSV
# files made into govulncheck's layout by tools/vulndb): both come from the Go
# module proxy, so the check needs no other network and gives the same answer
# until the pins move. Both are kept in VULN_CACHE. govulncheck is built with,
# and loads the standard library of, the Go that runs: `GOTOOLCHAIN=go1.27.3
# make vulncheck` checks that Go's (one built by an older Go cannot read it). It scans source, not dist/: govulncheck -mode binary cannot
# read the Go version of a binary built with a GOEXPERIMENT (golang/go#53740).
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
VULN_CACHE ?= $(or $(PORTHOLE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/porthole)/vuln
VULNCHECK_TARGETS := $(filter linux-mipsle:% linux-armv7:%,$(CROSS_TARGETS))

.PHONY: vulncheck
vulncheck: ## known vulnerabilities (pinned govulncheck and database, from the Go module proxy) in the device binary's code for mipsle and armv7 and in ./... for this host; fails on any; not in make test: with Go 1.26.8 it finds standard-library ones only a newer Go fixes (docs/firmware.md)
	@gvc=$(VULN_CACHE)/govulncheck-$(GOVULNCHECK_VERSION)-$$($(GO) env GOVERSION)/govulncheck; \
	if [ ! -x $$gvc ]; then \
		echo "building govulncheck@$(GOVULNCHECK_VERSION) into $${gvc%/*}"; \
		GOOS= GOARCH= GOBIN=$${gvc%/*} $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION); \
	fi
	@db=$(VULN_CACHE)/vulndb-$(VULNDB_VERSION); \
	if [ ! -f $$db/index/modules.json ]; then \
		$(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | $(GO) run ./tools/vulndb -out $$db; \
	fi
	@gvc=$(VULN_CACHE)/govulncheck-$(GOVULNCHECK_VERSION)-$$($(GO) env GOVERSION)/govulncheck; \
	db=file://$(VULN_CACHE)/vulndb-$(VULNDB_VERSION); \
	exp='$(DEVICE_GOEXPERIMENT)'; found=; \
	for t in $(VULNCHECK_TARGETS); do \
		name=$${t%%:*}; rest=$${t#*:}; arch=$${rest%%:*}; env=$${rest#*:}; \
		echo; echo "== the device binary (./agent/cmd/porthole) for $$name: -tags netgo,osusergo, GOEXPERIMENT=$$exp"; \
		rc=0; env CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOEXPERIMENT=$$exp $$env $$gvc -db $$db -tags netgo,osusergo ./agent/cmd/porthole || rc=$$?; \
		case $$rc in 0) ;; 3) found="$$found $$name" ;; *) exit $$rc ;; esac; \
	done; \
	echo; echo "== ./... for this host ($$($(GO) env GOOS)-$$($(GO) env GOARCH)): tunneld, the lab, the console, porthole connect"; \
	rc=0; $$gvc -db $$db ./... || rc=$$?; \
	case $$rc in 0) ;; 3) found="$$found host" ;; *) exit $$rc ;; esac; \
	echo; if [ -n "$$found" ]; then echo "make vulncheck: known vulnerabilities in:$$found (above)"; exit 3; fi; \
	echo "make vulncheck: no known vulnerabilities"

.PHONY: deps
deps: ## install missing Debian packages the tests need (root + apt), else say what is missing
	tools/deps.sh test

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin dist $(CONSOLE_WEB)/node_modules
	find $(CONSOLE_WEB)/vendor -type f ! -name README.md -delete
