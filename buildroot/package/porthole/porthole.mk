################################################################################
#
# porthole
#
################################################################################

# Built from the tree this BR2_EXTERNAL lives in, in one of two ways:
#  - BR2_PACKAGE_PORTHOLE_HOST_GO: generic-package running the build machine's
#    Go. Buildroot's own Go cannot build for 32-bit MIPS, porthole's main
#    target (Config.in forces this way there), and may be older than the go
#    line of go.mod;
#  - otherwise golang-package, with Buildroot's host-go.
# Both vendor the modules before the build, check the Go version first, and
# build with make cross's tags, compiler and linker flags (less -s -w:
# Buildroot strips the binary itself).
# The version and build time make cross gives (make version): git describe in
# porthole's own repository, .version in a git archive export, else dev; never
# the tags of a firmware repository the tree sits in.
PORTHOLE_MAKE_VERSION := $(shell env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(MAKE) -s --no-print-directory -C $(BR2_EXTERNAL_PORTHOLE_PATH)/.. version 2>/dev/null)
PORTHOLE_VERSION = $(or $(word 1,$(PORTHOLE_MAKE_VERSION)),dev)
PORTHOLE_SITE = $(BR2_EXTERNAL_PORTHOLE_PATH)/..
PORTHOLE_SITE_METHOD = local
# What the tree's .gitignore keeps out of git is no source either (bin/porthole
# is a host binary, node_modules is large); Buildroot already leaves out .git.
PORTHOLE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/bin --exclude=/dist --exclude=/.lab --exclude=/.cache --exclude=node_modules
# The binary holds Go's runtime and the modules of go.mod it links, whose
# licenses (BSD and MIT) want their text with every copy: tools/pkg/THIRD_PARTY_NOTICES
# has them (tools/pkg/notices.sh, kept current by a test). Not vendor/*/LICENSE:
# legal-info runs before the build, before PORTHOLE_VENDOR makes vendor/.
# paho.golang is EPL-2.0 or EDL-1.0, which is BSD-3-Clause.
PORTHOLE_LICENSE = Apache-2.0, \
	BSD-3-Clause (Go, golang.org/x/crypto, golang.org/x/sys, protobuf, gliderlabs/ssh, kr/fs, paho.golang), \
	BSD-2-Clause (pkg/sftp), MIT (creack/pty, anmitsu/go-shlex)
PORTHOLE_LICENSE_FILES = LICENSE tools/pkg/THIRD_PARTY_NOTICES
PORTHOLE_GOMOD = github.com/porthole-iot/porthole
PORTHOLE_BUILD_TARGETS = agent/cmd/porthole
PORTHOLE_TAGS = netgo osusergo
PORTHOLE_BUILD_TIME = $(word 2,$(PORTHOLE_MAKE_VERSION))
PORTHOLE_LDFLAGS = \
	-X $(PORTHOLE_GOMOD)/agent.Version=$(PORTHOLE_VERSION) \
	$(if $(PORTHOLE_BUILD_TIME),-X $(PORTHOLE_GOMOD)/agent/notify.BuildTime=$(PORTHOLE_BUILD_TIME))
# The device's compiler flags (inlining only where it pays), from the file make
# cross and the QEMU boards read too; golang-package appends its own options.
PORTHOLE_BUILD_OPTS = $(addprefix -gcflags=,$(shell grep -v '^\#' $(BR2_EXTERNAL_PORTHOLE_PATH)/../agent/cmd/porthole/device.gcflags))

# Buildroot's target architecture as a Go port (Config.in's
# BR2_PACKAGE_PORTHOLE_HOST_GO_ARCH_SUPPORTS lists the same), and its variant:
# without the FPU GOARM 6 (VFPv2) or 7 (VFPv3) needs, and on MIPS without an
# FPU or with one in NaN-2008 mode (Go's hard-float code is legacy-NaN),
# software floating point. Elsewhere the base CPU level, as make cross pins
# it (its CROSS_TARGETS). The variant is passed to Buildroot's Go too: its
# go.mk sets GOARM from the CPU only, no GOMIPS64 at all, and no CPU level,
# and its Go runs in the caller's environment, where a GOAMD64=v3 (or one in
# the go env file) made a binary that devices without AVX2 refuse to run.
PORTHOLE_SOFTFLOAT = ,softfloat
ifeq ($(BR2_arm),y)
PORTHOLE_GOARCH = arm
ifeq ($(BR2_ARM_CPU_ARMV5),y)
PORTHOLE_GOARM = 5
else ifeq ($(BR2_ARM_CPU_ARMV6),y)
PORTHOLE_GOARM = 6$(if $(BR2_ARM_CPU_HAS_VFPV2),,$(PORTHOLE_SOFTFLOAT))
else
# ARMv7-A, or ARMv8-A in 32-bit mode: Go has no GOARM=8 (golang/go#29373)
PORTHOLE_GOARM = 7$(if $(BR2_ARM_CPU_HAS_VFPV3),,$(PORTHOLE_SOFTFLOAT))
endif
PORTHOLE_GOARCH_ENV = GOARM=$(PORTHOLE_GOARM)
else ifeq ($(BR2_aarch64),y)
PORTHOLE_GOARCH = arm64
PORTHOLE_GOARCH_ENV = GOARM64=v8.0
else ifeq ($(BR2_mips)$(BR2_mipsel),y)
PORTHOLE_GOARCH = $(if $(BR2_mipsel),mipsle,mips)
PORTHOLE_GOARCH_ENV = GOMIPS=$(PORTHOLE_MIPS_FLOAT)
else ifeq ($(BR2_mips64)$(BR2_mips64el),y)
PORTHOLE_GOARCH = $(if $(BR2_mips64el),mips64le,mips64)
PORTHOLE_GOARCH_ENV = GOMIPS64=$(PORTHOLE_MIPS_FLOAT)
else ifeq ($(BR2_i386),y)
PORTHOLE_GOARCH = 386
PORTHOLE_GOARCH_ENV = GO386=$(if $(BR2_X86_CPU_HAS_SSE2),sse2,softfloat)
else ifeq ($(BR2_x86_64),y)
PORTHOLE_GOARCH = amd64
PORTHOLE_GOARCH_ENV = GOAMD64=v1
else ifeq ($(BR2_RISCV_64),y)
PORTHOLE_GOARCH = riscv64
PORTHOLE_GOARCH_ENV = GORISCV64=rva20u64
else ifeq ($(BR2_powerpc64le),y)
PORTHOLE_GOARCH = ppc64le
PORTHOLE_GOARCH_ENV = GOPPC64=power8
else ifeq ($(BR2_s390x),y)
PORTHOLE_GOARCH = s390x
endif
PORTHOLE_MIPS_FLOAT = $(if $(BR2_MIPS_SOFT_FLOAT)$(BR2_MIPS_NAN_2008),softfloat,hardfloat)

# The device's GOEXPERIMENT (agent/cmd/porthole/device.goexperiment, as make
# cross and the QEMU boards build): its experiments that the Go that builds
# knows, joined by commas (PORTHOLE_CHECK_GO warns of each other one). Shell
# code, run where the go command runs: when this file is read, Buildroot's
# host-go is not built yet. PORTHOLE_GOEXPERIMENT_SORT leaves the known ones in
# $known and the others in $unknown.
PORTHOLE_GOEXPERIMENT_WANT = sed -n '/^[^\#]/p' $(BR2_EXTERNAL_PORTHOLE_PATH)/../agent/cmd/porthole/device.goexperiment
PORTHOLE_GOEXPERIMENT_SORT = known=; unknown=; \
	for e in $$($(PORTHOLE_GOEXPERIMENT_WANT) | tr , ' '); do \
	if GOENV=off GOTOOLCHAIN=local GOEXPERIMENT=$$e $(PORTHOLE_GO_BIN) env GOEXPERIMENT >/dev/null 2>&1; \
	then known=$${known:+$$known,}$$e; else unknown="$$unknown $$e"; fi; done
PORTHOLE_GOEXPERIMENT = $$($(PORTHOLE_GOEXPERIMENT_SORT); echo "$$known")

PORTHOLE_GO_ENV = CGO_ENABLED=0 $(PORTHOLE_GOARCH_ENV) GOEXPERIMENT=$(PORTHOLE_GOEXPERIMENT)

ifeq ($(BR2_PACKAGE_PORTHOLE_HOST_GO),y)

ifeq ($(PORTHOLE_GOARCH),)
$(error porthole: BR2_PACKAGE_PORTHOLE_HOST_GO has no Go port for BR2_ARCH $(BR2_ARCH))
endif

PORTHOLE_GO = $(call qstrip,$(BR2_PACKAGE_PORTHOLE_HOST_GO_BIN))
PORTHOLE_GO_BIN = $(PORTHOLE_GO)

# Go's build cache; `make PORTHOLE_GOCACHE=...` shares another one (a Go cache
# is safe to share between builds).
PORTHOLE_GOCACHE = $(@D)/.go/cache

# The environment of every go command of the build is this and nothing else:
# no GOFLAGS, GOARM or GOAMD64 from the shell, no go env file (GOENV=off), no
# toolchain download (GOTOOLCHAIN=local), no module download (GOPROXY=off:
# the modules are vendored), no go.work from a parent folder.
PORTHOLE_HOST_GO_ENV = env -i \
	PATH="$(PATH)" \
	HOME=$(@D)/.go/home \
	GOENV=off \
	GOTOOLCHAIN=local \
	GOWORK=off \
	GOPROXY=off \
	GOFLAGS=-mod=vendor \
	GOPATH=$(@D)/.go \
	GOCACHE=$(PORTHOLE_GOCACHE) \
	GOOS=linux \
	GOARCH=$(PORTHOLE_GOARCH) \
	$(PORTHOLE_GO_ENV)

# What golang-package passes to go build, with porthole's values.
define PORTHOLE_BUILD_CMDS
	cd $(@D) && $(PORTHOLE_HOST_GO_ENV) $(PORTHOLE_GO) build \
		-trimpath -buildvcs=false \
		-tags "$(PORTHOLE_TAGS)" \
		-ldflags "$(PORTHOLE_LDFLAGS)" \
		$(if $(PARALLEL_JOBS),-p $(PARALLEL_JOBS)) \
		$(PORTHOLE_BUILD_OPTS) \
		-o $(@D)/bin/$(notdir $(PORTHOLE_BUILD_TARGETS)) \
		$(PORTHOLE_GOMOD)/$(PORTHOLE_BUILD_TARGETS)
endef

define PORTHOLE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/bin/$(notdir $(PORTHOLE_BUILD_TARGETS)) \
		$(TARGET_DIR)/usr/bin/$(notdir $(PORTHOLE_BUILD_TARGETS))
endef

# Vendoring needs the modules: from the module cache and proxy that the
# build machine's Go is set up with (set GOPROXY=off in the environment to
# use the cache only).
PORTHOLE_GO_RUN = $(PORTHOLE_HOST_GO_ENV) $(PORTHOLE_GO)
PORTHOLE_VENDOR_GO = GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off $(PORTHOLE_GO)
PORTHOLE_GO_NAME = '$(PORTHOLE_GO)' (BR2_PACKAGE_PORTHOLE_HOST_GO_BIN)
PORTHOLE_GO_HINT = set BR2_PACKAGE_PORTHOLE_HOST_GO_BIN (External options > porthole) to the go command of a Go >= $$need, such as /usr/local/go/bin/go.

else # golang-package, Buildroot's host-go

PORTHOLE_GO_RUN = GOTOOLCHAIN=local $(GO_BIN)
PORTHOLE_GO_BIN = $(GO_BIN)
PORTHOLE_VENDOR_GO = $(HOST_GO_COMMON_ENV) GOFLAGS=-mod=mod GOWORK=off \
	GOPROXY=$(or $(GOPROXY),https://proxy.golang.org) $(GO_BIN)
PORTHOLE_GO_NAME = Buildroot's host-go ($(GO_BIN))
PORTHOLE_GO_HINT = enable BR2_PACKAGE_PORTHOLE_HOST_GO (External options > porthole) to build with the build machine's Go >= $$need instead.

endif

# go.mod's go line with GOTOOLCHAIN=local makes an older Go refuse the module,
# naming neither the Buildroot option nor the binary: this does, first.
define PORTHOLE_CHECK_GO
	$(Q)need=`sed -n 's/^go \([0-9][0-9.]*\).*/\1/p' $(@D)/go.mod`; \
	[ -n "$$need" ] || { echo "porthole: no go line in $(@D)/go.mod" >&2; exit 1; }; \
	have=`$(PORTHOLE_GO_RUN) env GOVERSION` && [ -n "$$have" ] || { \
		echo "porthole: cannot run the Go toolchain $(PORTHOLE_GO_NAME): $(PORTHOLE_GO_HINT)" >&2; \
		exit 1; }; \
	case "$$have" in devel*) ;; *) \
	if [ `echo "$${have#go}" | $(PORTHOLE_GO_VERSION_NUMBER)` -lt `echo "$$need" | $(PORTHOLE_GO_VERSION_NUMBER)` ]; then \
		echo "porthole: the Go toolchain $(PORTHOLE_GO_NAME) is $$have, older than go $$need in go.mod: $(PORTHOLE_GO_HINT)" >&2; \
		exit 1; \
	fi ;; esac; \
	$(PORTHOLE_GOEXPERIMENT_SORT); \
	for e in $$unknown; do \
		echo "porthole: warning: the Go toolchain $(PORTHOLE_GO_NAME) is $$have, which does not know GOEXPERIMENT=$$e (agent/cmd/porthole/device.goexperiment): porthole is built without it, larger or with more idle memory (docs/size.md)" >&2; \
	done
endef
# 1.26.3 -> 100260003; a pre-release comes before its .0: 1.27rc1 -> 100269999
PORTHOLE_GO_VERSION_NUMBER = awk -F'[^0-9]+' '{ pre = /(rc|beta)/; printf "%d\n", $$1 * 100000000 + $$2 * 10000 + (pre ? -1 : $$3) }'

# Buildroot vendors Go modules only for downloaded sources, not for this local
# tree: vendor them into the build folder, unless the tree has a vendor/ of
# its own (run `go mod vendor` there for a build without network). This runs
# before each build, after the Go check, and not after the rsync: there
# Buildroot's host-go may not be installed yet (the rsync step does not wait
# for the package's dependencies), and a rebuild after a go.mod change would
# keep a stale vendor/. -modcacherw, as Buildroot's own go-post-process has it:
# with Buildroot's Go the module cache is in the output folder, and the
# read-only folders Go makes there by default made make clean fail.
define PORTHOLE_VENDOR
	if [ ! -d $(PORTHOLE_SITE)/vendor ]; then \
		cd $(@D) && $(PORTHOLE_VENDOR_GO) mod vendor -modcacherw; \
	fi
endef
PORTHOLE_PRE_BUILD_HOOKS += PORTHOLE_CHECK_GO PORTHOLE_VENDOR

define PORTHOLE_INSTALL_CONFIG
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/etc/porthole
	if [ ! -f $(TARGET_DIR)/etc/porthole/porthole.toml ]; then \
		$(INSTALL) -m 0600 $(PORTHOLE_PKGDIR)/porthole.toml $(TARGET_DIR)/etc/porthole/porthole.toml; \
	fi
	$(if $(call qstrip,$(BR2_PACKAGE_PORTHOLE_THING_NAME)),\
		$(SED) 's|^thing_name = .*|thing_name = "$(call qstrip,$(BR2_PACKAGE_PORTHOLE_THING_NAME))"|' \
			$(TARGET_DIR)/etc/porthole/porthole.toml)
	$(if $(call qstrip,$(BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT)),\
		$(SED) '$(PORTHOLE_MQTT_ENDPOINT_SED)' $(TARGET_DIR)/etc/porthole/porthole.toml)
endef
PORTHOLE_POST_INSTALL_TARGET_HOOKS += PORTHOLE_INSTALL_CONFIG
# An option left empty is "" in the .config, quotes included: qstrip before
# $(if ...), or an empty option would write thing_name = "" over the value.
# The endpoint key of [mqtt], whatever it holds (a rebuild after the option
# changed rewrites it), and not [tunnel]'s. A variable, for the comma of the
# sed range, which $(if ...) would take for its own.
PORTHOLE_MQTT_ENDPOINT_SED = /^\[mqtt\]/,/^\[/s|^endpoint = .*|endpoint = "$(call qstrip,$(BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT))"|

# Buildroot copies rootfs overlays with rsync --chmod=u=rwX,go=rX, so the
# device's key, authorized_keys and porthole.toml put in one (the board's
# readme.txt) would be 0644 in the image. This
# permission table (makedevs, applied under fakeroot when the filesystem
# images are made, after the overlays) makes them root's and 0600; F, not f:
# a file that is not there (no key in the overlay yet) is skipped, where f
# would fail the image.
define PORTHOLE_PERMISSIONS
	/etc/porthole/device.pem.key F 600 0 0 - - - - -
	/etc/porthole/authorized_keys F 600 0 0 - - - - -
	/etc/porthole/porthole.toml F 600 0 0 - - - - -
endef

# The init files of the other packages (tools/pkg), from the tree this
# BR2_EXTERNAL lives in, as the sources and device.gcflags are.
PORTHOLE_INIT_FILES = $(BR2_EXTERNAL_PORTHOLE_PATH)/../tools/pkg

# Off for an agent that /etc/inittab starts (and respawns): with the script
# too, a second agent would wait 15 s for the first's lock, exit 2, and
# inittab would start it again, for ever.
ifeq ($(BR2_PACKAGE_PORTHOLE_SYSV_INIT),y)
define PORTHOLE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(PORTHOLE_INIT_FILES)/sysv/porthole $(TARGET_DIR)/etc/init.d/S50porthole
endef
endif

define PORTHOLE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(PORTHOLE_INIT_FILES)/systemd/porthole.service \
		$(TARGET_DIR)/usr/lib/systemd/system/porthole.service
endef

ifeq ($(BR2_PACKAGE_PORTHOLE_HOST_GO),y)
$(eval $(generic-package))
else
$(eval $(golang-package))
endif
