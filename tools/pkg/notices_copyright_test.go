package pkg

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestNoticesCarryLinkedCopyrights: every copyright line
// of a file linked into a device binary whose license wants its notice in
// binary copies ("shall be included in all copies", "Redistributions in
// binary form must reproduce"), and every copyright line of paho.golang (used
// under the EDL-1.0, a BSD-3-Clause, whose binary clause reproduces "the above
// copyright notice"), appears in THIRD_PARTY_NOTICES.
func TestNoticesCarryLinkedCopyrights(t *testing.T) {
	notices, err := os.ReadFile("THIRD_PARTY_NOTICES")
	if err != nil {
		t.Fatal(err)
	}
	binaryClause := regexp.MustCompile(`(?i)shall be included in\s*(//)?\s*all copies|Redistributions in binary form must`)
	copyrightLine := regexp.MustCompile(`(?m)^[\s/*]*((?:Revisions )?Copyright\s+(?:\(c\)|©)?\s*[0-9][^\n]*)$`)
	targets := [][]string{
		{"GOARCH=mipsle", "GOMIPS=softfloat"}, {"GOARCH=mips", "GOMIPS=softfloat"},
		{"GOARCH=arm", "GOARM=5"}, {"GOARCH=arm", "GOARM=7"}, {"GOARCH=arm64"},
		{"GOARCH=386", "GO386=softfloat"}, {"GOARCH=amd64"}, {"GOARCH=mips64", "GOMIPS64=softfloat"}, {"GOARCH=riscv64"},
	}
	missing := map[string][]string{}
	for _, env := range targets {
		cmd := exec.Command("go", "list", "-tags", "netgo,osusergo", "-deps", "-f",
			"{{$d:=.Dir}}{{$m:=\"\"}}{{with .Module}}{{$m = .Path}}{{end}}{{range .GoFiles}}{{$m}} {{$d}}/{{.}}\n{{end}}{{range .SFiles}}{{$m}} {{$d}}/{{.}}\n{{end}}",
			"./agent/cmd/porthole")
		cmd.Dir = "../.."
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=readonly", "GOWORK=off"), env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", env, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			mod, file, _ := strings.Cut(line, " ")
			if mod == "github.com/porthole-iot/porthole" || file == "" {
				continue
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !binaryClause.Match(b) && mod != "github.com/eclipse/paho.golang" {
				continue
			}
			for _, m := range copyrightLine.FindAllStringSubmatch(string(b), -1) {
				c := strings.TrimSpace(m[1])
				if strings.Contains(c, "The Go Authors") {
					continue
				}
				if !strings.Contains(string(notices), c) {
					key := c
					short := strings.TrimPrefix(file, os.Getenv("HOME"))
					if !slices.Contains(missing[key], env[0]+" "+short) && len(missing[key]) < 3 {
						missing[key] = append(missing[key], env[0]+" "+short)
					}
				}
			}
		}
	}
	for c, where := range missing {
		t.Errorf("THIRD_PARTY_NOTICES lacks %q (linked from %s)", c, strings.Join(where, ", "))
	}
}
