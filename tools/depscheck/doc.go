// Package depscheck holds only a test: it fails when the device binary
// (agent/cmd/porthole, as cross-built by `make cross`) links a package it must
// not: host tools, the test fakes, the lab broker, the protobuf reflection
// runtime, a second WebSocket library or net/http (DESIGN.md, "Rules of the
// house" and "Budgets"). It is not a size report; tools/sizereport is.
package depscheck
