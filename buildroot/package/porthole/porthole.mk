################################################################################
#
# porthole
#
################################################################################

# Built from the tree this BR2_EXTERNAL lives in. Buildroot vendors Go modules
# only for downloaded sources, so PORTHOLE_VENDOR runs `go mod vendor` after the
# rsync (network access to the Go module proxy), unless the tree already has a
# vendor/ directory (run `go mod vendor` there first for offline builds).
PORTHOLE_VERSION = $(shell git -C $(BR2_EXTERNAL_PORTHOLE_PATH) describe --tags --always --dirty 2>/dev/null || echo dev)
PORTHOLE_SITE = $(BR2_EXTERNAL_PORTHOLE_PATH)/..
PORTHOLE_SITE_METHOD = local
PORTHOLE_LICENSE = Apache-2.0
PORTHOLE_GOMOD = github.com/porthole-iot/porthole
PORTHOLE_BUILD_TARGETS = agent/cmd/porthole
PORTHOLE_TAGS = netgo osusergo
PORTHOLE_BUILD_TIME = $(shell TZ=UTC git -C $(BR2_EXTERNAL_PORTHOLE_PATH) log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null)
PORTHOLE_LDFLAGS = \
	-X $(PORTHOLE_GOMOD)/agent.Version=$(PORTHOLE_VERSION) \
	$(if $(PORTHOLE_BUILD_TIME),-X $(PORTHOLE_GOMOD)/agent/notify.BuildTime=$(PORTHOLE_BUILD_TIME))
PORTHOLE_GO_ENV = CGO_ENABLED=0
# The device's compiler flags (inlining only where it pays), from the file make
# cross and the QEMU boards read too; golang-package appends its own options.
PORTHOLE_BUILD_OPTS = $(addprefix -gcflags=,$(shell grep -v '^\#' $(BR2_EXTERNAL_PORTHOLE_PATH)/../agent/cmd/porthole/device.gcflags))

define PORTHOLE_VENDOR
	if [ ! -d $(@D)/vendor ]; then \
		cd $(@D) && $(HOST_GO_COMMON_ENV) GOFLAGS=-mod=mod GOPROXY=$(or $(GOPROXY),https://proxy.golang.org) \
			$(GO_BIN) mod vendor; \
	fi
endef
PORTHOLE_POST_RSYNC_HOOKS += PORTHOLE_VENDOR

define PORTHOLE_INSTALL_CONFIG
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/etc/porthole
	if [ ! -f $(TARGET_DIR)/etc/porthole/porthole.toml ]; then \
		$(INSTALL) -m 0600 $(PORTHOLE_PKGDIR)/porthole.toml $(TARGET_DIR)/etc/porthole/porthole.toml; \
	fi
	$(if $(BR2_PACKAGE_PORTHOLE_THING_NAME),\
		$(SED) 's|^thing_name = .*|thing_name = "$(call qstrip,$(BR2_PACKAGE_PORTHOLE_THING_NAME))"|' \
			$(TARGET_DIR)/etc/porthole/porthole.toml)
	$(if $(BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT),\
		$(SED) 's|^endpoint = "CHANGE-ME.*|endpoint = "$(call qstrip,$(BR2_PACKAGE_PORTHOLE_MQTT_ENDPOINT))"|' \
			$(TARGET_DIR)/etc/porthole/porthole.toml)
endef
PORTHOLE_POST_INSTALL_TARGET_HOOKS += PORTHOLE_INSTALL_CONFIG

define PORTHOLE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(PORTHOLE_PKGDIR)/S50porthole $(TARGET_DIR)/etc/init.d/S50porthole
endef

define PORTHOLE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(PORTHOLE_PKGDIR)/porthole.service \
		$(TARGET_DIR)/usr/lib/systemd/system/porthole.service
endef

$(eval $(golang-package))
