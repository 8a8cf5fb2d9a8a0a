package sshd

import (
	"encoding/binary"
	"fmt"
	"os"
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
	_ [0]func() // not comparable: no equality function in the binary (docs/size.md)
	// f is a named field, not an embedded *os.File: embedded, every method of
	// *os.File that matches an interface method the binary calls was linked
	// twice more, as sftpDir's and *sftpDir's (61 functions, docs/size.md).
	f      *os.File
	listed bool // "." and ".." have been sent
}

// sftpFileAttrs is the ATTRS sftp-server sends for a file
// (draft-ietf-secsh-filexfer-02 section 5): a STAT or LSTAT reply, and after
// each READDIR entry's names.
type sftpFileAttrs struct {
	Flags        uint32 // SSH_FILEXFER_ATTR_SIZE, UIDGID, PERMISSIONS and ACMODTIME
	Size         uint64
	UID, GID     uint32
	Mode         uint32
	Atime, Mtime uint32
}

func fileAttrs(st *unix.Stat_t) sftpFileAttrs {
	return sftpFileAttrs{Flags: 0xf, Size: uint64(st.Size), UID: st.Uid, GID: st.Gid, Mode: uint32(st.Mode),
		Atime: uint32(st.Atim.Sec), Mtime: uint32(st.Mtim.Sec)}
}

// opendir opens the directory p and replies with a handle for it, unless the
// session holds maxOpenHandles open.
func (s *sftpFront) opendir(id uint32, p string) []byte {
	if s.filesOpen()+len(s.dirs) >= maxOpenHandles {
		return sftpStatusPacket(id, syscall.EMFILE)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return sftpStatusPacket(id, err)
	}
	s.lastDir++
	h := "d" + strconv.Itoa(s.lastDir) // pkg/sftp's handles are plain numbers
	s.dirs[h] = &sftpDir{f: f}
	return sftpReply(sftpHandle, id, gossh.Marshal(struct{ H string }{h}))
}

// errNotDirHandle refuses READDIR with a handle that is not an open
// directory's.
const errNotDirHandle = sftpFailureMsg("not the handle of an open directory")

// readdir replies with the next entries of the directory with handle h, up
// to 100 read from it (the first reply adds "." and "..", so up to 102;
// sftp-server counts those in its 100), or with SSH_FX_EOF at its end. An entry that
// cannot be lstat'ed (removed meanwhile) is left out. Entries are stat'ed
// in the open directory (fstatat), not by a path that could since lead
// elsewhere.
func (s *sftpFront) readdir(id uint32, h string) []byte {
	d := s.dirs[h]
	if d == nil {
		// A file's handle or none: "failure", as sftp-server answers.
		return sftpStatusPacket(id, errNotDirHandle)
	}
	fd := int(d.f.Fd())
	now := time.Now()
	ids := idNames{srv: s.srv}
	for {
		names, err := d.f.Readdirnames(100)
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
			mtime, _, ok := statxTimes(fd, name, unix.AT_SYMLINK_NOFOLLOW)
			if !ok {
				mtime = int64(st.Mtim.Sec)
			}
			data = append(data, gossh.Marshal(struct {
				Name, LongName string
				_              func() // see sftpStatusPacket
			}{Name: name, LongName: longName(name, &st, mtime, ids.user(st.Uid), ids.group(st.Gid), now)})...)
			data = append(data, gossh.Marshal(fileAttrs(&st))...)
		}
		if n > 0 {
			return sftpReply(sftpName, id, append(binary.BigEndian.AppendUint32(nil, n), data...))
		}
		if err != nil {
			return sftpStatusPacket(id, err) // io.EOF at the end
		}
	}
}

// stat answers STAT (follow) or LSTAT of p with the attributes sftp-server
// sends. pkg/sftp, which has only an os.FileInfo, sent the modification time as
// the access time, so a client that keeps times on a download (sftp get -p,
// scp -p, pscp -p) gave the copy the wrong access time.
func (s *sftpFront) stat(id uint32, p string, follow bool) []byte {
	var st unix.Stat_t
	var err error
	if follow {
		err = unix.Stat(p, &st)
	} else {
		err = unix.Lstat(p, &st)
	}
	if err != nil {
		return sftpStatusPacket(id, err)
	}
	return sftpReply(sftpAttrs, id, gossh.Marshal(fileAttrs(&st)))
}

// closeDirs closes the directories the client left open, once pkg/sftp's
// Serve has returned.
func (s *sftpFront) closeDirs() {
	for _, d := range s.dirs {
		d.f.Close()
	}
}

// idNames names users and groups for one READDIR reply from the server's
// passwd and group files (PasswdFile, GroupFile, as for logins), each read at
// most once per reply, as sftp-server's user_from_uid caches them. An id a
// file does not name, or any id when srv is nil, is shown as the number.
type idNames struct {
	srv           *Server
	users, groups map[uint32]string // read when first needed; the first name of an id wins
}

func (m *idNames) user(uid uint32) string {
	if n, ok := m.lookupUser(uid); ok {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func (m *idNames) group(gid uint32) string {
	if n, ok := m.lookupGroup(gid); ok {
		return n
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// lookupUser is the name of uid, if the passwd file has one.
func (m *idNames) lookupUser(uid uint32) (string, bool) {
	if m.users == nil {
		m.users = map[uint32]string{}
		if m.srv != nil {
			if entries, err := m.srv.readPasswd(); err == nil {
				for _, e := range entries {
					if _, ok := m.users[e.UID]; !ok {
						m.users[e.UID] = e.Name
					}
				}
			}
		}
	}
	n, ok := m.users[uid]
	return n, ok
}

// lookupGroup is the name of gid, if the group file has one.
func (m *idNames) lookupGroup(gid uint32) (string, bool) {
	if m.groups == nil {
		m.groups = map[uint32]string{}
		if m.srv != nil {
			if f, _, err := openRegular(m.srv.groupPath()); err == nil {
				eachGroup(f, func(name string, id uint32, _ string) {
					if _, ok := m.groups[id]; !ok {
						m.groups[id] = name
					}
				})
				f.Close()
			}
		}
	}
	n, ok := m.groups[gid]
	return n, ok
}

// longName is the "ls -l" line of an entry as sftp-server's ls_file
// (sftp-common.c) makes it: the time of day ("%b %e %H:%M") for an mtime in
// the last six months, else the year ("%b %e  %Y"). mtime is in seconds, from
// statxTimes where it can be: st's cannot hold every time on 32-bit devices.
func longName(name string, st *unix.Stat_t, mtimeSec int64, owner, group string, now time.Time) string {
	mtime := time.Unix(mtimeSec, 0).In(localZone()) // localtime(3)'s zone, with a POSIX TZ too
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
