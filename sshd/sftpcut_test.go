package sshd

import (
	"crypto/rand"
	"testing"
)

// TestSFTPCutUploadAudited: the connection lost in the middle of an upload
// (the tunnel closed, expired or rotated), its file still open for writing,
// ends the session with status 1: it ended with 0, as a finished upload, in
// the log and the ssh-session-end event. An upload whose file was closed
// ends with 0.
func TestSFTPCutUploadAudited(t *testing.T) {
	for _, tc := range []struct {
		name   string
		close  bool
		status int
	}{{"cut", false, 1}, {"closed", true, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.login("root")
			_, cl := sftpOn(t, c)
			f, err := cl.Create("upload.bin")
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 256<<10)
			rand.Read(data)
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			c.Close() // the link gone: no channel close
			waitFor(t, "the session's end", func() bool { return len(e.eventsOf(EventSessionEnd)) == 1 })
			if ev := e.eventsOf(EventSessionEnd)[0]; ev.ExitStatus != tc.status {
				t.Errorf("session end: exit status %d, want %d", ev.ExitStatus, tc.status)
			}
		})
	}
}
