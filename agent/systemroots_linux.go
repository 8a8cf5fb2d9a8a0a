package agent

import (
	"bytes"
	"io"
	"os"
	"strings"
)

// rootFiles and rootDirs are where crypto/x509 reads the system's CA
// certificates on Linux (root_linux.go), unless SSL_CERT_FILE or SSL_CERT_DIR
// name others (root_unix.go): the first of rootFiles that can be read, and
// every file of the directories.
var (
	rootFiles = [...]string{
		"/etc/ssl/certs/ca-certificates.crt",
		"/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/ca-bundle.pem",
		"/etc/pki/tls/cacert.pem",
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		"/etc/ssl/cert.pem",
	}
	rootDirs = [...]string{"/etc/ssl/certs", "/etc/pki/tls/certs"}
)

// systemRoots reports whether crypto/x509 finds a CA certificate where it
// looks for the system's. It reads the start of a file or a few, where
// x509.SystemCertPool would parse every root and keep the pool for the
// process's life (about 4 MiB of heap for Debian's bundle, docs/benchmarks.md):
// an agent that opens no tunnel would carry that for a warning.
func systemRoots() bool {
	files := rootFiles[:]
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
	}
	for _, f := range files {
		if found, read := startsPEMCert(f); read {
			if found {
				return true
			}
			break // crypto/x509 reads no other file
		}
	}
	dirs := rootDirs[:]
	if d := os.Getenv("SSL_CERT_DIR"); d != "" {
		dirs = strings.Split(d, ":")
	}
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if found, _ := startsPEMCert(d + "/" + e.Name()); found {
				return true
			}
		}
	}
	return false
}

// startsPEMCert reports whether a PEM certificate begins within the first 16
// KiB of the file path (a bundle may start with comments, or a certificate
// with openssl x509 -text's output), and whether the file could be read.
func startsPEMCert(path string) (found, read bool) {
	f, err := os.Open(path)
	if err != nil {
		return false, false
	}
	defer f.Close()
	b := make([]byte, 16<<10)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return false, false // a directory, say
	}
	return bytes.Contains(b[:n], []byte("-----BEGIN CERTIFICATE-----")), true
}
