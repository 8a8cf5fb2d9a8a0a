package console

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
)

// web/vendor holds xterm.js and friends copied from node_modules by
// `make console-assets` (npm ci; npm run vendor); in a fresh clone it holds only
// its README, so the package builds, and the page says what to run.
//
//go:embed web/static web/vendor
var webFS embed.FS

// vendorFiles are the third-party files the page loads from /vendor/.
var vendorFiles = []string{"xterm.js", "xterm.css", "addon-fit.js"}

// ErrNoVendor means the xterm.js files are missing from the build.
var ErrNoVendor = errors.New("console: xterm.js is not in this build: run `make console-assets` (npm ci in tools/console/web), then rebuild")

func assets(vendor fs.FS) (static, vend fs.FS, err error) {
	static, err = fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, nil, err
	}
	if vendor == nil {
		if vendor, err = fs.Sub(webFS, "web/vendor"); err != nil {
			return nil, nil, err
		}
	}
	return static, vendor, nil
}

// CheckVendor reports whether every third-party file is present.
func (s *Server) CheckVendor() error { return checkVendor(s.vendor) }

// CheckVendor reports whether vendor (Config.Vendor: nil is the files built in)
// holds every third-party file, before a Server is made: the lab leaves out the
// console's port from the ports it checks when the console will not run.
func CheckVendor(vendor fs.FS) error {
	_, vendor, err := assets(vendor)
	if err != nil {
		return err
	}
	return checkVendor(vendor)
}

func checkVendor(vendor fs.FS) error {
	for _, f := range vendorFiles {
		if _, err := fs.Stat(vendor, f); err != nil {
			return fmt.Errorf("%w (%s missing)", ErrNoVendor, f)
		}
	}
	return nil
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	if err := s.CheckVendor(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b, err := fs.ReadFile(s.static, "index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}
