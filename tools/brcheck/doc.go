// Package brcheck holds only tests: they check the buildroot/ BR2_EXTERNAL
// tree for the mistakes Buildroot would report only when building, or not at
// all, since Buildroot itself is not available here.
//
// Structure: undefined BR2_PACKAGE_PORTHOLE* symbols, .mk variables outside
// the package's namespace or with misspelt infrastructure names, hooks that
// are never defined, missing files. (The init files are tools/pkg's, which
// its tests check; the real build below checks they are the ones installed.)
//
// Kconfig (kconfig_test.go): Linux's kconfig (kconfig-conf, of which
// Buildroot's is a copy) over testdata/buildroot.Kconfig, a stub of the
// Buildroot symbols porthole's Config.in reads, keeps BR2_PACKAGE_PORTHOLE=y
// of every defconfig and chooses Buildroot's Go or the build machine's for
// each kind of target.
//
// porthole.mk (package_test.go): GNU make runs its steps under a stub of
// Buildroot's package infrastructure, with a fake go that records how it was
// run: the environment and flags of go build for each architecture, the Go
// version check, and which infrastructure each configuration takes.
//
// The rootfs (rootfs_test.go): the config the target install writes from the
// options, rewritten on a rebuild, and the permission table that makes the
// overlay's secrets 0600 in the image.
//
// A real build (build_test.go): the defconfig's mipsle binary built through
// porthole.mk's own steps with the real go, read with go version -m and run
// under qemu-mipsel-static (skipped by -short); and the offline vendoring of
// the golang-package way.
//
// What it cannot check is Buildroot itself: its real package infrastructure,
// its toolchain and strip, its host-go.
package brcheck
