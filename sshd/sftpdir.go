package sshd

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Directory listings are served in front of pkg/sftp (OPENDIR, READDIR and
// CLOSE of their handles), as OpenSSH's sftp-server makes them (sftp-server.c,
// process_readdir), because pkg/sftp cannot be told how (its Server and
// RequestServer both format the long name themselves, in runLs):
//   - "." and ".." are listed, as readdir(3) returns them, so that "ls -la"
//     in OpenSSH's sftp shows them;
//   - the long name, which sftp's "ls -l" prints as it is, shows the year
//     instead of the time of day for a time in the future or more than six
//     months ago (pkg/sftp shows the time of day for any future time).

// sftpDir is an open directory; its name is the path it was opened by.
type sftpDir struct {
	*os.File
	listed bool // "." and ".." have been sent
}

// sftpNameEntry is one entry of an SSH_FXP_NAME reply, with the attributes
// sftp-server sends (draft-ietf-secsh-filexfer-02 section 5).
type sftpNameEntry struct {
	Name, LongName string
	Flags          uint32 // SSH_FILEXFER_ATTR_SIZE, UIDGID, PERMISSIONS and ACMODTIME
	Size           uint64
	UID, GID       uint32
	Mode           uint32
	Atime, Mtime   uint32
}

// maxOpenDirs bounds the directories one SFTP session holds open here (sftp's
// ls and get -r hold one at a time); maxOpenFiles bounds its files.
const maxOpenDirs = 64

// opendir opens the directory p and replies with a handle for it.
func (s *sftpFront) opendir(id uint32, p string) []byte {
	if len(s.dirs) >= maxOpenDirs {
		return sftpStatusPacket(id, syscall.EMFILE)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return sftpStatusPacket(id, err)
	}
	s.lastDir++
	h := "d" + strconv.Itoa(s.lastDir) // pkg/sftp's handles are plain numbers
	s.dirs[h] = &sftpDir{File: f}
	return sftpReply(sftpHandle, id, gossh.Marshal(struct{ H string }{h}))
}

// readdir replies with the next entries of the directory with handle h, up
// to 100 as sftp-server sends, or with SSH_FX_EOF at its end. An entry that
// cannot be lstat'ed (removed meanwhile) is left out. Entries are stat'ed
// in the open directory (fstatat), not by a path that could since lead
// elsewhere.
func (s *sftpFront) readdir(id uint32, h string) []byte {
	d := s.dirs[h]
	if d == nil {
		return sftpStatusPacket(id, syscall.EBADF)
	}
	fd := int(d.Fd())
	now := time.Now()
	ids := idNames{}
	for {
		names, err := d.Readdirnames(100)
		if !d.listed {
			names, d.listed = append([]string{".", ".."}, names...), true
		}
		var data []byte
		n := uint32(0)
		for _, name := range names {
			var st unix.Stat_t
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			n++
			data = append(data, gossh.Marshal(sftpNameEntry{
				Name: name, LongName: longName(name, &st, ids.user(st.Uid), ids.group(st.Gid), now), Flags: 0xf,
				Size: uint64(st.Size), UID: st.Uid, GID: st.Gid, Mode: st.Mode,
				Atime: uint32(st.Atim.Sec), Mtime: uint32(st.Mtim.Sec),
			})...)
		}
		if n > 0 {
			return sftpReply(sftpName, id, append(binary.BigEndian.AppendUint32(nil, n), data...))
		}
		if err != nil {
			return sftpStatusPacket(id, err) // io.EOF at the end
		}
	}
}

// closeDirs closes the directories the client left open, once pkg/sftp's
// Serve has returned.
func (s *sftpFront) closeDirs() {
	for _, d := range s.dirs {
		d.Close()
	}
}

// idNames names users and groups for one READDIR reply, looking each id up
// once, as sftp-server's user_from_uid caches them: without the system's C
// library, every lookup reads /etc/passwd or /etc/group again. An id the
// database does not have is shown as the number.
type idNames map[uint64]string

func (m idNames) user(uid uint32) string {
	return m.name(uint64(uid), func(id string) (string, error) {
		u, err := user.LookupId(id)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

func (m idNames) group(gid uint32) string {
	return m.name(1<<32|uint64(gid), func(id string) (string, error) {
		g, err := user.LookupGroupId(id)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// name is the cached name of key (a uid, or 1<<32 | gid), looked up by id.
func (m idNames) name(key uint64, lookup func(id string) (string, error)) string {
	if n, ok := m[key]; ok {
		return n
	}
	id := strconv.FormatUint(key&(1<<32-1), 10)
	n, err := lookup(id)
	if err != nil {
		n = id
	}
	m[key] = n
	return n
}

// longName is the "ls -l" line of an entry as sftp-server's ls_file
// (sftp-common.c) makes it: the time of day ("%b %e %H:%M") for an mtime in
// the last six months, else the year ("%b %e  %Y").
func longName(name string, st *unix.Stat_t, owner, group string, now time.Time) string {
	mtime := time.Unix(int64(st.Mtim.Sec), 0)
	layout := "Jan _2  2006"
	if age := now.Unix() - mtime.Unix(); age >= 0 && age < 365*24*60*60/2 {
		layout = "Jan _2 15:04"
	}
	return fmt.Sprintf("%s %3d %-8s %-8s %8d %s %s", strmode(st.Mode), uint64(st.Nlink), owner, group, st.Size, mtime.Format(layout), name)
}

// strmode is strmode(3): the file type and permissions as ls shows them,
// with a trailing space (for an alternate access method, none here).
func strmode(m uint32) string {
	b := []byte("?rwxrwxrwx ")
	b[0] = "?pc?d?b?-?l?s???"[m>>12&0xf]
	for i := range 9 {
		if m&(0o400>>i) == 0 {
			b[1+i] = '-'
		}
	}
	if m&syscall.S_ISUID != 0 {
		b[3] = "Ss"[m>>6&1]
	}
	if m&syscall.S_ISGID != 0 {
		b[6] = "Ss"[m>>3&1]
	}
	if m&syscall.S_ISVTX != 0 {
		b[9] = "Tt"[m&1]
	}
	return string(b)
}
