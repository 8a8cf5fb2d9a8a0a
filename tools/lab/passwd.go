package lab

import (
	"errors"
	"fmt"
	"os"

	"github.com/porthole-iot/porthole/sshd"
)

// passwdFile is where the lab finds the name of the user it runs as: where
// its agent's SSH server finds its login users (sshd.Server's PasswdFile),
// read as the server reads it (sshd.UserName).
const passwdFile = "/etc/passwd"

// labUser is the user the lab's ssh line and console log in to its device as,
// which runs as this process's user: that user's name, which the agent's SSH
// server (not root) takes as its only login user, found in passwdFile.
func labUser() (string, error) {
	uid := os.Geteuid()
	name, err := sshd.UserName(passwdFile, uint32(uid))
	if errors.Is(err, sshd.ErrUnknownUser) {
		return "", fmt.Errorf("you (uid %d) have no entry in %s: the lab's ssh line and web console log in to its device as you, "+
			"by your user name, and its agent's SSH server logs in only a user of %[2]s; add one (useradd -u %[1]d NAME; in a container too), "+
			"or run the lab as a user that has one, or as root", uid, passwdFile)
	}
	if err != nil {
		return "", fmt.Errorf("finding your user name (uid %d), which the lab's ssh line logs in as: %w", uid, err)
	}
	return name, nil
}
