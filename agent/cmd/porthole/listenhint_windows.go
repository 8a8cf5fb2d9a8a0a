package main

import (
	"errors"

	"golang.org/x/sys/windows"
)

// listenHint names the usual cause of a -L port Windows refuses with
// WSAEACCES ("forbidden by its access permissions"), which reads as a lack
// of rights: a port in a range Hyper-V, WSL or Docker Desktop reserved.
func listenHint(err error) string {
	if errors.Is(err, windows.WSAEACCES) {
		return " (Windows keeps ports reserved for Hyper-V, WSL or Docker: netsh interface ipv4 show excludedportrange protocol=tcp; choose a port outside them)"
	}
	return ""
}
