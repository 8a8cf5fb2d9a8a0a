// Package brcheck holds only a test: it checks the buildroot/ BR2_EXTERNAL
// tree for the mistakes Buildroot would report only when building, since
// Buildroot itself is not available here — undefined BR2_PACKAGE_PORTHOLE*
// symbols, .mk variables outside the package's namespace or with misspelt
// infrastructure names, hooks that are never defined, missing files, init
// scripts that are not executable or fail sh -n, and copies of the init files
// that drifted from tools/pkg.
package brcheck
