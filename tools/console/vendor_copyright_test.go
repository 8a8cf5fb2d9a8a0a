package console

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestVendorCarriesBundledCopyrights: the minified xterm.js
// that vendor.mjs copies into web/vendor (embedded and served to every browser)
// bundles modules of other authors (VS Code's vs/base, MIT, "Copyright (c)
// Microsoft Corporation"); MIT wants each copyright notice in every copy, so each
// copyright line of the bundle's sources (its source map's sourcesContent)
// must be in the served file. Needs make console-assets (node_modules and vendor/).
func TestVendorCarriesBundledCopyrights(t *testing.T) {
	mapFile := "web/node_modules/@xterm/xterm/lib/xterm.js.map"
	b, err := os.ReadFile(mapFile)
	if err == nil {
		var served []byte
		if served, err = os.ReadFile("web/vendor/xterm.js"); err == nil {
			checkBundledCopyrights(t, b, served)
			return
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v: make test runs make console-assets first", err)
	}
	t.Skipf("%v: run make console-assets", err)
}

// checkBundledCopyrights checks served (vendor/xterm.js) against the copyright
// lines of the sources in the source map b.
func checkBundledCopyrights(t *testing.T, b, served []byte) {
	var m struct {
		Sources        []string `json:"sources"`
		SourcesContent []string `json:"sourcesContent"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	holder := regexp.MustCompile(`Copyright \(c\) (?:[0-9, -]+)?([A-Za-z][^.\n(]*)`)
	seen := map[string]string{}
	for i, src := range m.SourcesContent {
		for _, h := range holder.FindAllStringSubmatch(src, -1) {
			name := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(h[1]), "All rights reserved"))
			if _, ok := seen[name]; !ok {
				seen[name] = m.Sources[i]
			}
		}
	}
	for name, src := range seen {
		if !strings.Contains(string(served), name) {
			t.Errorf("web/vendor/xterm.js lacks the copyright of %q (bundled from %s)", name, src)
		}
	}
}
