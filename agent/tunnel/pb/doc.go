// Package pb holds the protobuf-go code generated from message.proto, the Secure
// Tunneling frame body. It is the reference the hand-written codec in agent/tunnel is
// cross-checked against in tests; the device binary does not link it (it would pull in
// the ~1.5 MB protobuf reflection runtime). Regenerate with `make generate`
// (protoc from Debian's protobuf-compiler, protoc-gen-go v1.36.12).
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative message.proto
