// Package lab runs the whole porthole path on one machine, without an AWS account:
// an MQTT v5 broker with mutual TLS (mochi-mqtt, in process), the tunneling service
// (tools/tunneld, in process, data plane over TLS with a dev CA), the real
// `porthole agent` binary as a child process playing the device, and the operator's
// source side on local ports; with --board NAME the agent runs instead in a QEMU
// board of board/ (cross-built, in the board's initramfs, reaching the broker and
// tunneld at 10.0.2.2). It is what `make lab` runs (binary porthole-lab) and
// what developers use to reproduce bugs.
//
// State (the dev CA, certificates, the operator's SSH key, the agent's config and
// data) lives in a directory (.lab in the working directory by default), made
// once and reused. lab.json in it names every endpoint, port and file for
// scripts. With --no-agent the lab writes its agent's config all the same
// (device/porthole.toml) and prints the command that runs an agent on it.
//
// Everything is on loopback, so nothing goes through the operator's https_proxy:
// the agent runs without https_proxy/HTTPS_PROXY in its environment, the source
// side and the console dial direct, and the command lines the lab prints start
// with no_proxy=127.0.0.1 when the environment would send them to a proxy.
//
// It is host-side only and never linked into the device binary.
package lab
