package console

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/stack"
)

// TestBrowser drives the console in Debian's Chromium with playwright-core
// (web/test/browser.mjs): open a tunnel to a device through the control plane, log
// in with the pre-selected key, run uname -m, echo $((6*7)) and
// echo hello-from-browser and read the answers from the terminal, shrink the window
// and see stty size follow, paste 8 MiB into a device that reads nothing for a
// while and see the page say how much is left and the device count all of it, fail a password login and then log in with the right
// one to a second device in a second tab, see the warning for a third device whose
// host key changed and log in after trusting the new key, take screenshots, and close the first
// tunnel and see the page say so. It needs node, npm (npm ci fetches xterm.js and
// playwright-core from the npm registry) and chromium; set PORTHOLE_BROWSER_OUT to
// keep the screenshots.
func TestBrowser(t *testing.T) {
	start := time.Now()
	node, chromium, web, vendor := browserPage(t)
	t.Logf("npm ci and vendor: %v", time.Since(start).Round(time.Millisecond))

	l := newTestLab(t, Config{Vendor: vendor}, "dev-a", "dev-b", "dev-c")
	// dev-c was "reinstalled": the console remembers another host key for it.
	if _, err := l.console.cfg.HostKeys.Check(context.Background(), "dev-c", newHostKey(t), ""); err != nil {
		t.Fatal(err)
	}
	outDir := os.Getenv("PORTHOLE_BROWSER_OUT")
	if outDir == "" {
		outDir = t.TempDir()
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(web, "test", "browser.mjs"))
	cmd.Dir = web
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+l.url, "CHROMIUM="+chromium, "OUT_DIR="+outDir,
		"THING=dev-a", "THING2=dev-b", "PASSWORD2="+testPassword, "THING3=dev-c")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	browserStart := time.Now()
	err := cmd.Run()
	t.Logf("browser.mjs (%v):\n%s", time.Since(browserStart).Round(time.Millisecond), stderr.String())
	if err != nil {
		t.Fatalf("browser.mjs: %v\n%s", err, stdout.String())
	}
	var res struct {
		Screenshots   []string `json:"screenshots"`
		HostKey       string   `json:"hostKeyStatus"`
		Uname         string   `json:"uname"`
		Answer        string   `json:"answer"`
		SizeBefore    string   `json:"sizeBefore"`
		SizeAfter     string   `json:"sizeAfter"`
		WrongPassword string   `json:"wrongPassword"`
		Tabs          int      `json:"tabs"`
		Closed        string   `json:"closedMessage"`
		HostKeyWarn   string   `json:"hostKeyWarning"`
		HostKeyTrust  bool     `json:"hostKeyTrusted"`
		Paste         string   `json:"paste"`
		PasteNote     string   `json:"pasteNote"`
		ConsoleErrors []string `json:"consoleErrors"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("browser.mjs output %q: %v", stdout.String(), err)
	}
	t.Logf("results: %+v", res)
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"host key recorded on first use", strings.Contains(res.HostKey, "recorded on first use")},
		{"uname -m answered", res.Uname != ""},
		{"42", res.Answer == "42"},
		{"stty size changed with the window", res.SizeBefore != "" && res.SizeAfter != "" && res.SizeBefore != res.SizeAfter},
		{"an 8 MiB paste arrived whole", res.Paste == "8388608"},
		{"the page said how much of the paste was left", strings.Contains(res.PasteNote, "to go")},
		{"wrong password said", strings.Contains(res.WrongPassword, "wrong password")},
		{"three tabs (tunnels and two terminals and more)", res.Tabs >= 3},
		{"closed tunnel said", strings.Contains(res.Closed, "tunnel is closed")},
		{"changed host key warned", strings.Contains(res.HostKeyWarn, "WARNING") && strings.Contains(res.HostKeyWarn, "has changed")},
		{"the new host key trusted on request", res.HostKeyTrust},
		{"no errors in the page's console", len(res.ConsoleErrors) == 0},
	} {
		if !c.ok {
			t.Errorf("%s: not so in %+v", c.what, res)
		}
	}
	for _, s := range res.Screenshots {
		if fi, err := os.Stat(s); err != nil || fi.Size() == 0 {
			t.Errorf("screenshot %s: %v", s, err)
		}
		t.Logf("screenshot: %s", s)
	}
	t.Logf("TestBrowser took %v", time.Since(start).Round(time.Millisecond))
}

// TestBrowserPasteStaysBracketed: a clipboard that a web page in another tab has
// written (pastejacking) holds "ESC[201~", the end of a bracketed paste, and then
// a command with a carriage return. Pasted into a terminal whose shell has
// bracketed paste on (bash's readline turns it on), the command must stay text on
// the command line, as in xterm, VTE or Alacritty, which take the ESC out of a
// paste; xterm.js 6.0.0 passes it through, and the shell runs the command.
func TestBrowserPasteStaysBracketed(t *testing.T) {
	var res struct {
		Executed bool   `json:"executed"`
		Screen   string `json:"screen"`
	}
	runPageScript(t, "paste.mjs", "dev-paste", &res)
	t.Logf("the terminal shows:\n%s", res.Screen)
	if res.Executed {
		t.Fatalf("a pasted command left the bracketed paste and ran; the terminal shows:\n%s", res.Screen)
	}
}

// runPageScript runs web/test/SCRIPT in Chromium against a test lab with the
// device thing, and decodes the JSON it prints into res.
func runPageScript(t *testing.T, script, thing string, res any) {
	t.Helper()
	node, chromium, web, vendor := browserPage(t)
	l := newTestLab(t, Config{Vendor: vendor}, thing)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(web, "test", script))
	cmd.Dir = web
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+l.url, "CHROMIUM="+chromium, "OUT_DIR="+t.TempDir(), "THING="+thing)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("%s:\n%s", script, stderr.String())
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stdout.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), res); err != nil {
		t.Fatalf("%s output %q: %v", script, stdout.String(), err)
	}
}

// browserPage finds node and chromium and puts the page's vendored files
// (xterm.js, from npm ci) in a temporary directory: it returns the programs,
// the web directory and the vendored files.
func browserPage(t *testing.T) (node, chromium, web string, vendor fs.FS) {
	node = stack.NeedProgram(t, "node")
	npm := stack.NeedProgram(t, "npm")
	chromium = stack.NeedProgram(t, "chromium")
	web, err := filepath.Abs("web")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, args := range [][]string{{npm, "ci", "--no-audit", "--no-fund"}, {node, "vendor.mjs", dir}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = web
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), web, err, out)
		}
	}
	return node, chromium, web, os.DirFS(dir)
}

// TestVendorCarriesLicense: the xterm.js files vendor.mjs copies into the
// console (embedded in porthole-console and porthole-lab, and served to every
// browser that opens the page) carry xterm.js's MIT license: the minified
// xterm.js and addon-fit.js have no notice of their own, and MIT wants the
// copyright and permission notice in every copy.
func TestVendorCarriesLicense(t *testing.T) {
	node := stack.NeedProgram(t, "node")
	web := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(web, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.ReadFile("web/vendor.mjs")
	if err != nil {
		t.Fatal(err)
	}
	write("vendor.mjs", string(src))
	write("node_modules/@xterm/xterm/lib/xterm.js", "!function(){}();\n")
	write("node_modules/@xterm/xterm/css/xterm.css", ".xterm{}\n")
	write("node_modules/@xterm/xterm/LICENSE", "Copyright (c) xterm.js authors\n\nPermission is hereby granted (xterm)\n")
	write("node_modules/@xterm/addon-fit/lib/addon-fit.js", "!function(){}();\n")
	write("node_modules/@xterm/addon-fit/LICENSE", "Copyright (c) xterm.js authors\n\nPermission is hereby granted (addon-fit)\n")
	out := t.TempDir()
	cmd := exec.Command(node, "vendor.mjs", out)
	cmd.Dir = web
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node vendor.mjs: %v\n%s", err, b)
	}
	for file, license := range map[string]string{"xterm.js": "(xterm)", "xterm.css": "(xterm)", "addon-fit.js": "(addon-fit)"} {
		b, err := os.ReadFile(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "Permission is hereby granted "+license) || !strings.Contains(string(b), "Copyright (c) xterm.js authors") {
			t.Errorf("vendored %s lacks its package's LICENSE:\n%s", file, b)
		}
		if !strings.HasSuffix(string(b), "!function(){}();\n") && !strings.HasSuffix(string(b), ".xterm{}\n") {
			t.Errorf("vendored %s does not end with the original file:\n%s", file, b)
		}
	}
}

// TestBrowserTableKeepsFocus: the page refreshes the tunnels table every 1.5 s,
// and draws it again only when it changed: it was rebuilt each time, so the
// keyboard focus on a row's button went back to the page's body, a selected
// tunnel id (to copy for describe-tunnel) was unselected, and a click that
// spanned a refresh was lost.
func TestBrowserTableKeepsFocus(t *testing.T) {
	var res struct {
		FocusAfter     string `json:"focusAfter"`
		SelectedBefore string `json:"selectedBefore"`
		SelectedAfter  string `json:"selectedAfter"`
		LoginShown     bool   `json:"loginShown"`
		Error          string `json:"error"`
	}
	runPageScript(t, "rerender.mjs", "dev-table", &res)
	t.Logf("%+v", res)
	if res.Error != "" {
		t.Fatalf("rerender.mjs: %s", res.Error)
	}
	if res.FocusAfter != "BUTTON.close" {
		t.Errorf("the focus on the row's Close button was lost to %s", res.FocusAfter)
	}
	if res.SelectedBefore == "" || res.SelectedAfter != res.SelectedBefore {
		t.Errorf("the selected tunnel id %q became %q", res.SelectedBefore, res.SelectedAfter)
	}
	if !res.LoginShown {
		t.Errorf("a click on Terminal that spanned a refresh did nothing")
	}
}
