package lab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// passwdFile is where the lab finds the name of the user it runs as: where
// its agent's SSH server finds its login users (sshd.Server's PasswdFile),
// read directly as the server reads it, not through NSS or $USER, which may
// give a name the server does not know.
const passwdFile = "/etc/passwd"

// errNoPasswdEntry is loginName's error for a uid the passwd file does not
// list.
var errNoPasswdEntry = errors.New("no entry")

// loginName is the name of user uid in the passwd file path: the first line
// with that uid, skipping lines as the agent's SSH server does (sshd's
// parsePasswd: each line trimmed of spaces; comments, and those without 7
// fields, a name, or a numeric uid and gid).
func loginName(path string, uid int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		f := strings.Split(line, ":")
		if strings.HasPrefix(line, "#") || len(f) != 7 || f[0] == "" {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if _, gerr := strconv.ParseUint(f[3], 10, 32); err == nil && gerr == nil && id == uint64(uid) {
			return f[0], nil
		}
	}
	return "", errNoPasswdEntry
}

// labUser is the user the lab's ssh line and console log in to its device as,
// which runs as this process's user: that user's name, which the agent's SSH
// server (not root) takes as its only login user, found by name in
// passwdFile.
func labUser() (string, error) {
	uid := os.Geteuid()
	name, err := loginName(passwdFile, uid)
	if errors.Is(err, errNoPasswdEntry) {
		return "", fmt.Errorf("you (uid %d) have no entry in %s: the lab's ssh line and web console log in to its device as you, "+
			"by your user name, and its agent's SSH server logs in only a user of %[2]s; add one (useradd -u %[1]d NAME; in a container too), "+
			"or run the lab as a user that has one, or as root", uid, passwdFile)
	}
	if err != nil {
		return "", fmt.Errorf("finding your user name (uid %d), which the lab's ssh line logs in as: %w", uid, err)
	}
	return name, nil
}
