//go:build !windows

package main

// listenHint adds nothing here (listenhint_windows.go).
func listenHint(error) string { return "" }
