package sshd

import (
	"crypto/rand"
	"path/filepath"
	"testing"

	gossh "golang.org/x/crypto/ssh"
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

// TestSFTPOpenThenGoneAudited: a client gone just after an OPEN that
// truncated a file (sftp's put interrupted as it starts: the OPEN and the
// EOF arrive together) ends the session with status 1, as a cut upload.
// pkg/sftp's HANDLE reply can be written after Serve returns, and the file
// was counted open only from that reply: the session ended with 0, the file
// emptied.
func TestSFTPOpenThenGoneAudited(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("root")
	p := filepath.Join(e.home("root"), "precious")
	for i := range 10 {
		writeFile(t, p, "kept until the upload replaces it")
		s := openRaw(t, c)
		if ok, err := s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"})); !ok || err != nil {
			t.Fatalf("subsystem sftp = %v, %v", ok, err)
		}
		s.ch.Write(sftpPacket(1, uint32(3)))
		readSFTPPacket(t, s.ch)
		s.ch.Write(sftpPacket(sftpOpen, uint32(7), p, uint32(sftpFlagWrite|sftpFlagCreat|sftpFlagTrunc), uint32(0)))
		s.ch.CloseWrite()
		if got := <-s.status; got != "exit-status 1" {
			t.Fatalf("run %d: %s after an OPEN that truncated the file, want exit-status 1", i, got)
		}
	}
	// An OPEN that failed, answered, leaves no file open.
	s := openRaw(t, c)
	s.ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"sftp"}))
	s.ch.Write(sftpPacket(1, uint32(3)))
	readSFTPPacket(t, s.ch)
	s.ch.Write(sftpPacket(sftpOpen, uint32(7), p+"/not-a-dir", uint32(sftpFlagWrite|sftpFlagCreat), uint32(0)))
	readSFTPPacket(t, s.ch)
	s.ch.CloseWrite()
	if got := <-s.status; got != "exit-status 0" {
		t.Errorf("%s after a failed OPEN, want exit-status 0", got)
	}
}
