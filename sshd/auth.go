package sshd

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
	gossh "golang.org/x/crypto/ssh"
)

// Permission extensions carry what authentication decided to the session
// and forwarding handlers (x/crypto keeps them on the ServerConn).
const (
	extMethod       = "porthole@method"
	extKey          = "porthole@key"
	extCertID       = "porthole@cert-id"
	extForceCommand = "porthole@force-command"
	extNoPTY        = "porthole@no-pty"
	extNoForward    = "porthole@no-port-forwarding"
	extNoAgent      = "porthole@no-agent-forwarding"
	extPermitOpen   = "porthole@permitopen"
	extPermitListen = "porthole@permitlisten"
	extNoTouch      = "no-touch-required" // read by x/crypto for sk keys
)

// authorizedKeysPaths expands AuthorizedKeysFiles for a.
func (s *Server) authorizedKeysPaths(a *account) []string {
	var out []string
	for _, p := range s.logins().AuthorizedKeysFiles {
		var b strings.Builder
		for i := 0; i < len(p); i++ {
			if p[i] == '%' && i+1 < len(p) {
				switch p[i+1] {
				case 'h':
					b.WriteString(a.Home)
					i++
					continue
				case 'u':
					b.WriteString(a.Name)
					i++
					continue
				case '%':
					b.WriteByte('%')
					i++
					continue
				}
			}
			b.WriteByte(p[i])
		}
		path := b.String()
		if !filepath.IsAbs(path) {
			path = filepath.Join(a.Home, path)
		}
		out = append(out, path)
	}
	return out
}

// authorizedKeys reads the user's authorized_keys files. Missing files are
// skipped (logged at debug, with the path looked for); files that are not
// regular or fail safePath are ignored, and bad lines skipped, with a
// warning. When not one of the files could be read, noFile says why, so that
// a refused login names that rather than "key not in authorized_keys".
func (s *Server) authorizedKeys(a *account) (keys []authorizedKey, noFile error) {
	var missing []string
	read := false
	for _, path := range s.authorizedKeysPaths(a) {
		k, err := s.readKeysFile("authorized keys", path, a)
		keys = append(keys, k...)
		switch {
		case err == nil:
			read = true
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, path)
		case noFile == nil:
			noFile = wrapErr("authorized_keys file "+path+" ignored", err)
		}
	}
	switch {
	case read:
		return keys, nil
	case noFile != nil:
		return keys, noFile
	case len(missing) > 0:
		return keys, errors.New("no authorized_keys file (" + strings.Join(missing, ", ") + " not found)")
	}
	return keys, nil
}

// trustedCAs reads TrustedUserCAKeysFiles.
func (s *Server) trustedCAs() []gossh.PublicKey {
	var out []gossh.PublicKey
	for _, path := range s.logins().TrustedUserCAKeysFiles {
		keys, _ := s.readKeysFile("trusted user CA keys", path, nil)
		for _, k := range keys {
			out = append(out, k.Key)
		}
	}
	return out
}

// ignoredError is why a keys file that is there is not read: it is not a
// regular file, or it fails safePath (authorized_keys) or safeCAPath.
type ignoredError struct{ err error }

func (e *ignoredError) Error() string { return e.err.Error() }
func (e *ignoredError) Unwrap() error { return e.err }

// loadKeysFile reads one file in authorized_keys format, without logging. For
// a user's authorized_keys file, a is that user and the file must pass
// safePath; a nil a reads a trusted user CA keys file, which must pass
// safeCAPath. err is set when the file was not read: it wraps fs.ErrNotExist for
// a missing file, and is an *ignoredError for one that is there but not used.
// lineErrs are the lines skipped (parseAuthorizedKeys); fi is the file read, or
// the one ignored.
//
// sshd opens all of a user's authorized_keys files as the user
// (temporarily_use_uid). Read as root, a user's ~/.ssh/authorized_keys linked
// to a file only root may read told the user, by a login, whether a key was
// in it, and at each key offered root read where the link led (/proc/kmsg's
// reads consume the kernel's messages). So a file the user could make lead
// elsewhere (userSteers) is opened with the user's permissions (openAsUser)
// when the server is not the user's. One only root chooses
// (/etc/porthole/authorized_keys, 0600, for every user) is still read as
// root, where sshd would not read it at all: no user can point it elsewhere.
func (s *Server) loadKeysFile(path string, a *account) (keys []authorizedKey, lineErrs []error, fi os.FileInfo, err error) {
	var f *os.File
	if a != nil && !s.sameUser(a) && userSteers(path, a.UID) {
		f, fi, err = s.openAsUser(path, a)
	} else {
		f, fi, err = openRegular(path)
	}
	if errors.Is(err, errNotRegular) {
		return nil, nil, fi, &ignoredError{err}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	if a != nil {
		err = safePath(fi, path, a)
	} else {
		err = safeCAPath(fi, path)
	}
	if err != nil {
		return nil, nil, fi, &ignoredError{err}
	}
	keys, lineErrs = parseAuthorizedKeys(f)
	if a == nil {
		// A trusted user CA keys file holds bare keys, as sshd reads it
		// (sshkey_in_file refuses the file): options there would be
		// dropped, trusting the CA without the restriction they name.
		kept := keys[:0]
		for _, k := range keys {
			if k.HasOptions {
				lineErrs = append(lineErrs, &lineError{Line: k.Line, Err: errCAKeyOptions})
				continue
			}
			kept = append(kept, k)
		}
		keys = kept
	}
	return keys, lineErrs, fi, nil
}

// errCAKeyOptions skips a line of a trusted user CA keys file with options.
var errCAKeyOptions error = &errorString{"options are for authorized_keys (cert-authority lines); " +
	"a trusted user CA keys file takes bare public keys, so the line is ignored"}

// readKeysFile is loadKeysFile that logs why it did not read the file and
// what it skipped; what names the kind of file in the log lines. Each is
// warned about at the first read that finds it in this version of the file
// and logged at debug at later reads (warnLog). Over-long lines make one line
// a read (with the first one's number and how many there were), never with
// their content.
func (s *Server) readKeysFile(what, path string, a *account) ([]authorizedKey, error) {
	keys, errs, fi, err := s.loadKeysFile(path, a)
	key := path // for warnLog
	if a != nil {
		key += "\x00" + a.Name // safePath depends on the user
	}
	var ignored *ignoredError
	switch {
	case errors.Is(err, fs.ErrNotExist) && a != nil:
		s.readClean(key)
		s.log().Debug(what+" file not found", "path", path, "user", a.Name)
		return nil, err
	case errors.As(err, &ignored):
		s.warnLog(key, fi, err)(what+" file ignored", "path", path, "error", err)
		return nil, err
	case err != nil:
		s.warnLog(key, nil, err)("reading "+what, "path", path, "error", err)
		return nil, err
	}
	if len(errs) == 0 {
		s.readClean(key)
		return keys, nil
	}
	logSkip := s.warnLog(key, fi, nil)
	firstLong, long := 0, 0
	for _, err := range errs {
		var le *lineError
		switch {
		case errors.Is(err, errLineTooLong) && errors.As(err, &le):
			if long == 0 {
				firstLong = le.Line
			}
			long++
		case errors.Is(err, errFileTooLarge) && errors.As(err, &le):
			logSkip(what+" file too large", "path", path, "line", le.Line, "max_bytes", maxKeysFile, "error", err)
		default:
			logSkip(what+" line skipped", "path", path, "error", err)
		}
	}
	if long > 0 {
		logSkip(what+" over-long lines skipped", "path", path, "line", firstLong, "count", long, "max_bytes", maxKeysLine)
	}
	return keys, nil
}

// checkLoginMethods logs one warning, at start, when no login can work (see
// CheckLogins, whose problems the server's caller reports with its own names
// for the settings).
func (s *Server) checkLoginMethods() {
	if _, ok := s.CheckLogins(); ok {
		return
	}
	s.log().Warn("no login method can work: no usable password hash, trusted user CA key or authorized_keys file",
		"authorized_keys_files", s.logins().AuthorizedKeysFiles, "trusted_user_ca_keys_files", s.logins().TrustedUserCAKeysFiles)
}

// LoginProblem is one reason, found by CheckLogins, why a login method of
// the server cannot work. Field is the Server field it is about:
// "AuthorizedKeysFiles", "TrustedUserCAKeysFiles", "PasswordHashes" or
// "PasswdFile".
type LoginProblem struct {
	_     [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Field string
	Err   error
}

func (p *LoginProblem) Error() string { return p.Field + ": " + p.Err.Error() }
func (p *LoginProblem) Unwrap() error { return p.Err }

// CheckLogins tells, by the rules of a login and without logging or changing
// anything, what in the server's login settings cannot work, and whether some
// login method can (ok; also true when that cannot be told). The users looked
// at are those who may log in (lookupUser): every user of the passwd file whose
// account is not disabled when the server runs as root, else its own user.
//
// Problems are: an authorized_keys file of one of them that a login ignores
// (not a regular file, or writable or owned by others: safePath), cannot
// read, or that holds no key; a trusted user CA keys file that is missing,
// unreadable or holds no key; a password hash for a user who may not log in;
// a passwd file that cannot be read or lets no one log in. A missing
// authorized_keys file is normal when another method works (a user's
// ~/.ssh/authorized_keys), so the missing files of the server's own user are
// listed only when no method can work.
func (s *Server) CheckLogins() (problems []*LoginProblem, ok bool) {
	add := func(field string, err error) { problems = append(problems, &LoginProblem{Field: field, Err: err}) }
	entries, err := s.readPasswd()
	if err != nil {
		add("PasswdFile", err)
		return problems, false
	}
	euid := s.euid()
	// One read of the shadow file for every account, not one per account.
	shadow := s.readShadow(func(string) bool { return true })
	var users []*account
	var own *account // the server's own user: root, usually
	var why error    // why the first account of the server's uid may not log in
	for i := range entries {
		e := &entries[i]
		if euid != 0 && int(e.UID) != euid {
			continue
		}
		if err := s.checkAccount(e, shadow); err != nil {
			if why == nil && int(e.UID) == euid {
				why = err
			}
			continue
		}
		a := &account{Name: e.Name, UID: e.UID, GID: e.GID, Home: e.Home, Shell: e.Shell}
		if own == nil && int(e.UID) == euid {
			own = a
		}
		users = append(users, a)
	}
	if len(users) == 0 {
		err := errors.New(s.passwdPath() + " has no account that may log in")
		if euid != 0 {
			err = fmt.Errorf("%s has no enabled account with uid %d, the server's, and only that user may log in", s.passwdPath(), euid)
		}
		if why != nil {
			err = fmt.Errorf("%w (%v)", err, why)
		}
		add("PasswdFile", err)
		return problems, false
	}
	if own == nil {
		own = users[0]
	}

	l := s.logins()
	users2 := make([]string, 0, len(l.PasswordHashes))
	for u := range l.PasswordHashes {
		users2 = append(users2, u)
	}
	slices.Sort(users2)
	for _, u := range users2 {
		if _, err := s.lookupUser(u); err != nil {
			add("PasswordHashes", wrapErr(u+" cannot log in", err))
		} else {
			ok = true
		}
	}

	for _, path := range l.TrustedUserCAKeysFiles {
		keys, lineErrs, _, err := s.loadKeysFile(path, nil)
		if err == nil && len(keys) == 0 {
			err = noKey(lineErrs)
		}
		if err != nil {
			add("TrustedUserCAKeysFiles", wrapErr(path, err))
			continue
		}
		ok = true
	}

	// A fixed path is the same file for every user: it is reported only if
	// none of them can use it (one may own it, another's home may hold it).
	var order []string
	failed := map[string]error{} // nil: someone can use it
	var missing []string
	for _, a := range users {
		for _, path := range s.authorizedKeysPaths(a) {
			keys, lineErrs, _, err := s.loadKeysFile(path, a)
			if err == nil && len(keys) == 0 {
				err = noKey(lineErrs)
			}
			var ignored *ignoredError
			switch {
			case err == nil:
				ok = true
			case errors.Is(err, fs.ErrNotExist):
				if a == own {
					missing = append(missing, path)
				}
				continue
			case errors.As(err, &ignored) && errors.Is(err, errNotRegular):
				err = fmt.Errorf("%s is ignored at login (user %s): %w", path, a.Name, err)
			case errors.As(err, &ignored):
				err = fmt.Errorf("%s is ignored at login (user %s): %w; the file and every directory above it "+
					"(and where its symbolic links lead) must belong to root or the user and not be writable by group or others", path, a.Name, err)
			default:
				err = fmt.Errorf("%s (user %s): %w", path, a.Name, err)
			}
			prev, seen := failed[path]
			switch {
			case !seen:
				order = append(order, path)
				failed[path] = err
			case prev != nil && err == nil:
				failed[path] = nil
			}
		}
	}
	for _, path := range order {
		if err := failed[path]; err != nil {
			add("AuthorizedKeysFiles", err)
		}
	}
	if !ok {
		for _, path := range missing {
			add("AuthorizedKeysFiles", errors.New(path+" does not exist (user "+own.Name+")"))
		}
	}
	return problems, ok
}

// noKey is the error for a keys file that holds no key. It counts the lines
// that did not parse; the server's log names each, by number (readKeysFile).
// Neither quotes the file: it may be a link, made by the user whose file it
// is, to a file only root may read (OpenSSH reads these files as the user;
// the agent, and check-config, read one as the user only when the user could
// have made it lead elsewhere: loadKeysFile). See lineError.
func noKey(lineErrs []error) error {
	if len(lineErrs) > 0 {
		return fmt.Errorf("holds no usable key (%d lines are not keys)", len(lineErrs))
	}
	return errors.New("holds no key")
}

// authorizeKey decides whether key may log in as user and with which
// restrictions.
func (s *Server) authorizeKey(st *connState, user string, key gossh.PublicKey) (*gossh.Permissions, error) {
	if s.limiter.blocked(st.src, s.clock()) {
		return nil, errTooManyFailures
	}
	a, err := s.lookupUser(user)
	if err != nil {
		return nil, err
	}
	if cert, ok := key.(*gossh.Certificate); ok {
		return s.authorizeCert(st, a, cert)
	}
	now := s.clock()
	var why error = errors.New("key not in authorized_keys")
	keys, noFile := s.authorizedKeys(a)
	if noFile != nil {
		why = noFile
	}
	for _, k := range keys {
		if k.Options.CertAuthority || !keysEqual(k.Key, key) {
			continue
		}
		if k.Options.Principals != nil {
			// sshd's auth_authorise_keyopts: "principals on non-CA key".
			why = errors.New("principals= on a line without cert-authority")
			continue
		}
		if err := s.checkLineOptions(st, k.Options, now); err != nil {
			why = err
			continue
		}
		if k.Options.VerifyRequired && isSecurityKey(key) {
			return nil, errVerifyRequired // sshd's login ends at this line: see errVerifyRequired
		}
		return permsFor("publickey", keyInfo(key), k.Options), nil
	}
	return nil, why
}

// checkLineOptions applies the conditions of an authorized_keys line that
// leave the next line to decide when they refuse, as in sshd: expiry-time=
// and from=.
func (s *Server) checkLineOptions(st *connState, o keyOptions, now time.Time) error {
	if !o.ExpiryTime.IsZero() && !now.Before(o.ExpiryTime) {
		return errors.New("key expired (expiry-time)")
	}
	if o.From != nil && !matchFrom(st.ip, o.From) {
		return errors.New("client address " + st.remote + " not allowed by from=")
	}
	return nil
}

// errVerifyRequired and errLineTouch refuse a security key whose line admits
// it on a condition the server cannot check: sshd applies verify-required to
// the signature's user-verified flag, which x/crypto does not show, and
// x/crypto waives the touch for a certificate with no-touch-required, where
// sshd needs its cert-authority line to say so too. sshd's login ends at
// that line (the signature then meets the condition, under the line's
// options, or fails), so they end the search for a line, or for a trusted
// CA, that would admit the key without the line's command= and restrict.
// (Of type *errorString, not error: authorizeCert's comparisons with them are
// then a pointer's, without a call of runtime.ifaceeq.)
var (
	errVerifyRequired = &errorString{"verify-required is not supported"}
	errLineTouch      = &errorString{"certificate has no-touch-required and its cert-authority line does not: " +
		"add no-touch-required to the line, or issue the certificate without it"}
)

// authorizeCert accepts a user certificate signed by a CA from a
// cert-authority line of the user's authorized_keys (principal: the login
// name, or one of the line's principals= list), with that line's options,
// or else from TrustedUserCAKeysFiles (principal: the login name).
func (s *Server) authorizeCert(st *connState, a *account, cert *gossh.Certificate) (*gossh.Permissions, error) {
	if cert.CertType != gossh.UserCert {
		return nil, errors.New("not a user certificate")
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, errors.New("certificate has no principals")
	}
	if cert.Signature == nil || cert.Signature.Format == gossh.KeyAlgoRSA {
		// As OpenSSH 8.2+'s CASignatureAlgorithms: SHA-1 CA signatures can be forged.
		return nil, errors.New("certificate signed with ssh-rsa (SHA-1)")
	}
	now := s.clock()
	checker := gossh.CertChecker{
		SupportedCriticalOptions: []string{"force-command", "source-address"},
		Clock:                    s.clock,
	}
	var why error = errors.New("certificate not signed by a trusted CA")
	// why is the refusal of the line or CA that came closest: one that
	// trusted the certificate for this user, refused only by its options or
	// the certificate's (matched), is kept over a later line's or CA's that
	// did not (principals, validity, from=).
	matched := false
	refused := func(err error, match bool) {
		if match || !matched {
			why, matched = err, match
		}
	}
	// The user's cert-authority lines first, as OpenSSH's sshd: a CA trusted
	// server-wide as well must not lift what a line of its own restricts
	// (command=, restrict, permitopen=); a line that refuses the login leaves
	// the next line, then the server-wide trust, to decide, as a line whose
	// options sshd cannot merge with the certificate's (sshauthopt_merge) or
	// whose source-address refuses the client fails only that line.
	keys, _ := s.authorizedKeys(a)
	for _, k := range keys {
		if !k.Options.CertAuthority || !keysEqual(k.Key, cert.SignatureKey) {
			continue
		}
		if err := s.checkLineOptions(st, k.Options, now); err != nil {
			refused(err, false)
			continue
		}
		principals := k.Options.Principals
		if principals == nil {
			principals = []string{a.Name}
		}
		var err error = errors.New("no certificate principal allowed by principals=")
		for _, p := range principals {
			if slices.Contains(cert.ValidPrincipals, p) {
				err = checker.CheckCert(p, cert)
				break
			}
		}
		if err != nil {
			refused(err, false)
			continue
		}
		p, err := certLogin(st, cert, k.Options, true)
		if err == errVerifyRequired || err == errLineTouch {
			return nil, err
		}
		if err != nil {
			refused(err, true)
			continue
		}
		return p, nil
	}
	for _, ca := range s.trustedCAs() {
		if !keysEqual(ca, cert.SignatureKey) {
			continue
		}
		if err := checker.CheckCert(a.Name, cert); err != nil {
			refused(err, false)
			continue
		}
		p, err := certLogin(st, cert, keyOptions{}, false)
		if err != nil {
			refused(err, true)
			continue
		}
		return p, nil
	}
	return nil, why
}

// checkSourceAddress applies a certificate's source-address critical option
// as sshd's addr_match_cidr_list does: each entry is an address or a CIDR
// block, read as from= reads one (parseCIDR, parseAddr: 127.1/32 and
// 127.000.000.001 are 127.0.0.1), of at most 49 bytes (INET6_ADDRSTRLEN+3)
// and only hex digits, '.', ':' and '/' (no wildcard, no zone, no 0x); with
// another, the certificate is invalid. x/crypto checks the option again once
// the login is decided, against the TCP address, with net.ParseIP and
// net.ParseCIDR, which refuse 127.1 and 127.000.000.001: so p, the login's
// Permissions, takes the list with each entry as Go writes it.
func checkSourceAddress(st *connState, cert *gossh.Certificate, p *gossh.Permissions) error {
	v, ok := cert.CriticalOptions["source-address"]
	if !ok {
		return nil
	}
	entries := splitList(v)
	canon := make([]string, len(entries))
	for i, e := range entries {
		pfx, isCIDR, err := parseCIDR(e)
		var a netip.Addr
		if err == nil && !isCIDR {
			a, err = parseAddr(e)
		}
		switch {
		case e == "" || len(e) > 49 || strings.Trim(e, "0123456789abcdefABCDEF.:/") != "" || err != nil:
			return fmt.Errorf("certificate source-address %q is not an address list", v)
		case isCIDR && pfx != pfx.Masked():
			return fmt.Errorf("certificate source-address %q has a CIDR block with bits set past its prefix length", v)
		case isCIDR:
			// Not pfx.String(): it would link 368 B into net/netip, ahead of
			// a window of code the idle agent leaves unmapped (docs/size.md).
			canon[i] = pfx.Addr().String() + "/" + strconv.Itoa(pfx.Bits())
		default:
			canon[i] = a.String()
		}
	}
	if !matchFrom(st.ip, entries) {
		return errors.New("client address " + st.remote + " not allowed by the certificate's source-address")
	}
	p.CriticalOptions = map[string]string{"source-address": strings.Join(canon, ",")}
	return nil
}

// certLogin is the Permissions of a login by cert, trusted by a line with
// options o (fromLine) or by TrustedUserCAKeysFiles, from st's address: the
// certificate's and the line's, merged (certPerms), if its source-address
// allows the address (checkSourceAddress).
func certLogin(st *connState, cert *gossh.Certificate, o keyOptions, fromLine bool) (*gossh.Permissions, error) {
	p, err := certPerms(cert, o, fromLine)
	if err == nil {
		err = checkSourceAddress(st, cert, p)
	}
	return p, err
}

// certPerms combines a certificate's options and extensions with those of
// the authorized_keys line that trusted its CA (fromLine; o is empty for a CA
// of TrustedUserCAKeysFiles). Like sshd's sshauthopt_merge, what the line and
// the certificate allow must both allow it.
func certPerms(cert *gossh.Certificate, o keyOptions, fromLine bool) (*gossh.Permissions, error) {
	if fc, ok := cert.CriticalOptions["force-command"]; ok {
		if o.HasCommand && o.Command != fc {
			return nil, errors.New("certificate force-command and authorized_keys command= differ")
		}
		o.Command, o.HasCommand = fc, true
	}
	if _, ok := cert.Extensions["permit-pty"]; !ok {
		o.NoPTY = true
	}
	if _, ok := cert.Extensions["permit-port-forwarding"]; !ok {
		o.NoPortForward = true
	}
	if _, ok := cert.Extensions["permit-agent-forwarding"]; !ok {
		o.NoAgentForward = true
	}
	_, certNoTouch := cert.Extensions["no-touch-required"]
	if fromLine {
		switch sk := isSecurityKey(cert.Key); {
		case sk && o.VerifyRequired:
			return nil, errVerifyRequired
		case sk && certNoTouch && !o.NoTouch:
			// x/crypto honours the certificate's extension on its own,
			// where sshd needs the line's option too: refused, even
			// with a touch, rather than let an untouched key in.
			return nil, errLineTouch
		}
		o.NoTouch = o.NoTouch && certNoTouch
	} else {
		o.NoTouch = certNoTouch
	}
	return permsFor("publickey", keyInfo(cert), o), nil
}

// isSecurityKey reports whether k is a FIDO security key (sk-*), whose
// signatures say whether it was touched.
func isSecurityKey(k gossh.PublicKey) bool {
	t := k.Type()
	return t == gossh.KeyAlgoSKECDSA256 || t == gossh.KeyAlgoSKED25519
}

// permsFor encodes a login's restrictions as Permissions extensions.
func permsFor(method string, k authInfo, o keyOptions) *gossh.Permissions {
	ext := map[string]string{extMethod: method, extKey: k.Fingerprint}
	if k.CertID != "" {
		ext[extCertID] = k.CertID
	}
	if o.HasCommand {
		ext[extForceCommand] = o.Command
	}
	if o.NoPTY {
		ext[extNoPTY] = ""
	}
	if o.NoPortForward {
		ext[extNoForward] = ""
	}
	if o.NoAgentForward {
		ext[extNoAgent] = ""
	}
	if o.PermitOpen != nil {
		ext[extPermitOpen] = strings.Join(o.PermitOpen, "\n")
	}
	if o.PermitListen != nil {
		ext[extPermitListen] = strings.Join(o.PermitListen, "\n")
	}
	if o.NoTouch {
		ext[extNoTouch] = ""
	}
	return &gossh.Permissions{Extensions: ext}
}

// restrictions is the decoded form of a login's Permissions.
type restrictions struct {
	method       string
	forceCommand string
	hasForce     bool
	noPTY        bool
	noForward    bool
	noAgent      bool
	permitOpen   []string // nil: no per-key list
	permitListen []string
}

func restrictionsOf(p *gossh.Permissions) restrictions {
	var r restrictions
	if p == nil {
		return restrictions{noPTY: true, noForward: true, noAgent: true}
	}
	e := p.Extensions
	r.method = e[extMethod]
	r.forceCommand, r.hasForce = e[extForceCommand]
	_, r.noPTY = e[extNoPTY]
	_, r.noForward = e[extNoForward]
	_, r.noAgent = e[extNoAgent]
	if v, ok := e[extPermitOpen]; ok {
		r.permitOpen = strings.Split(v, "\n")
	}
	if v, ok := e[extPermitListen]; ok {
		r.permitListen = strings.Split(v, "\n")
	}
	return r
}

// safePath refuses an authorized_keys file that someone other than root or
// the user could have written, like sshd's StrictModes: the file and every
// directory up to the user's home (or up to / for files outside it) must
// be owned by root or the user and not be writable by group or others, and
// so must those a symbolic link leads to (safeWalk). fi is the opened file's
// (openRegular's, so it is a regular file).
func safePath(fi os.FileInfo, path string, a *account) error {
	return safeWalk(fi, path, a.UID, filepath.Clean(a.Home), false)
}

// safeCAPath refuses a trusted user CA keys file that someone other than root
// or the server's user could have written: it trusts certificates for every
// user, root too. The file and every directory up to / must be owned by root
// or that user and not be writable by group or others, but for a sticky
// directory (/tmp), whose entries only their owners may replace; the same
// holds where a symbolic link leads (safeWalk). (OpenSSH does not check this
// file; its authorized_keys are checked as above.)
func safeCAPath(fi os.FileInfo, path string) error {
	return safeWalk(fi, path, uint32(os.Geteuid()), "/", true)
}

// safeWalk checks the file of fi at path and each directory above it up to
// home (for a path in it; else up to /): owned by root or uid, not writable
// by group or others (a sticky directory may be, if stickyOK).
//
// The file is opened through symbolic links, so the directories of the path
// as written are not enough: a link in a safe directory to a file in one
// that others may write let them replace the file (a CA keys file linked
// into such a directory logged in as root). As in sshd's auth_secure_path,
// which checks only the real path (realpath(3); here sftp's realPath), the
// directories of the real path are checked too, up to home's real path; and
// so is each directory holding a link followed on the way, and the link's
// owner (one in a sticky directory is its owner's to replace): whoever may
// write there could point the link elsewhere. Last, the file at the real
// path must be the one opened (fi), so that what is read is what was
// checked, even if a link changed in between.
func safeWalk(fi os.FileInfo, path string, uid uint32, home string, stickyOK bool) error {
	check := func(name string, fi os.FileInfo) error {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && st.Uid != uid {
			return fmt.Errorf("bad ownership of %s: uid %d", name, st.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && !(stickyOK && fi.IsDir() && fi.Mode()&fs.ModeSticky != 0) {
			return errors.New("bad modes of " + name + ": " + OctalMode(fi.Mode()) + " is group or world writable")
		}
		return nil
	}
	// walk checks dir and the directories above it, up to home for the
	// entry name in it (or up to /).
	walk := func(dir, name, home string) error {
		stop := "/"
		if home != "/" && strings.HasPrefix(name, home+"/") {
			stop = home
		}
		for ; ; dir = filepath.Dir(dir) {
			fi, err := os.Stat(dir)
			if err != nil {
				return err
			}
			if err := check(dir, fi); err != nil {
				return err
			}
			if dir == stop || dir == "/" || dir == "." {
				return nil
			}
		}
	}
	if err := check(path, fi); err != nil {
		return err
	}
	if err := walk(filepath.Dir(path), path, home); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	realHome := "/" // for a home that is not there: checked up to /, as none
	if h, err := realPath("/", home, nil); err == nil {
		realHome = h
	}
	real, err := realPath("/", abs, func(link string, st *syscall.Stat_t) error {
		if st == nil { // a directory ".." leaves: nothing to check
			return nil
		}
		if st.Uid != 0 && st.Uid != uid {
			return fmt.Errorf("bad ownership of symbolic link %s: uid %d", link, st.Uid)
		}
		if err := walk(filepath.Dir(link), link, realHome); err != nil {
			return wrapErr("linked through "+link, err)
		}
		return nil
	})
	if errno, ok := err.(syscall.Errno); ok { // realPath's own, without the path
		return &fs.PathError{Op: "realpath", Path: path, Err: errno}
	}
	if err != nil {
		return err
	}
	if real != abs {
		if err := walk(filepath.Dir(real), real, realHome); err != nil {
			return wrapErr("linked to "+real, err)
		}
	}
	if !checkedFile(fi, path, real) {
		return errors.New(path + " changed while it was checked")
	}
	return nil
}

// checkedFile reports whether fi, the file openRegular opened (fstat), is the one
// at real, where path leads. On overlayfs before Linux 4.19 (OpenWrt 18.06 and
// 19.07: 4.9, 4.14) an opened file is its layer's own, whose device and inode
// number stat through the overlay does not give (4.12-4.18 give the overlay's
// device and the original lower inode): there the file path leads to, which
// is the one at real, must have fi's size, mode and modification time.
func checkedFile(fi os.FileInfo, path, real string) bool {
	rfi, err := os.Stat(real)
	if err != nil {
		return false
	}
	if os.SameFile(fi, rfi) {
		return true
	}
	pfi, err := os.Stat(path)
	return err == nil && os.SameFile(pfi, rfi) && pfi.Size() == fi.Size() && pfi.Mode() == fi.Mode() && pfi.ModTime().Equal(fi.ModTime())
}

// OctalMode is m's permission bits in octal as chmod takes them, with the
// setuid, setgid and sticky bits (/tmp is 1777; FileMode's own String shows it
// as "trwxrwxrwx" and Perm drops the t).
func OctalMode(m fs.FileMode) string {
	o := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		o |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		o |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		o |= 0o1000
	}
	return fmt.Sprintf("%04o", o)
}

// dummyHash is a bcrypt hash of no one's password, compared against for a
// user without a password hash (or unknown), so that refusing them takes as
// long as refusing a wrong password.
type dummyHash struct {
	hash []byte
	cost int
}

// updateDummy makes the dummy hash for the password hashes in effect, unless
// the one made last has their cost already: bcrypt at cost 12 takes seconds
// on a router's CPU, and a reload (SIGHUP) that leaves the cost alone must not
// pay it. It reads the hashes under dummyMu, so that of two SetLogins at once
// the hashes stored last decide the cost; logins go on with the old dummy
// while a new one is made. Without hashes it keeps the last one: no user has
// a password for the timing to give away.
func (s *Server) updateDummy() error {
	s.dummyMu.Lock()
	defer s.dummyMu.Unlock()
	hashes := s.logins().PasswordHashes
	old := s.dummy.Load()
	if len(hashes) == 0 && old != nil {
		return nil
	}
	cost, err := HashesCost(hashes)
	if err != nil {
		return err
	}
	if old != nil && old.cost == cost {
		return nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte("porthole: no such user"), cost)
	if err != nil {
		return wrapErr("sshd: making the dummy password hash", err)
	}
	s.dummy.Store(&dummyHash{hash: h, cost: cost})
	return nil
}

// HashesCost checks that every hash is bcrypt's and returns the highest cost
// among them (bcrypt.DefaultCost for none), for the dummy hash. The highest:
// the cost of whichever hash the map yielded first changed from one start to
// the next with mixed costs, and a dummy cheaper than a user's hash makes an
// unknown user's refusal quicker than that user's; with the highest, no
// refusal of an unknown user is quicker than a known one's. (With mixed costs
// the users of the lower ones are still told apart by being quicker: give
// every user the same cost.)
func HashesCost(hashes map[string]string) (int, error) {
	cost := 0
	for user, h := range hashes {
		c, err := HashCost(h)
		if err != nil {
			return 0, fmt.Errorf("sshd: password hash for %q is not bcrypt: %w", user, err)
		}
		cost = max(cost, c)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	return cost, nil
}

// HashCost checks that h is a bcrypt hash a password can match, and returns
// its cost. The error quotes no more of h than bcrypt.Cost's do: a byte of the
// prefix, or the two of the cost.
func HashCost(h string) (int, error) {
	c, err := bcrypt.Cost([]byte(h))
	if err != nil {
		return 0, err
	}
	// bcrypt.Cost reads only the version and cost, so it takes hashes no
	// password matches: of 59 characters, of more than 60 (a trailing
	// newline or space), and those whose salt and hash, the 53 characters
	// after "$2a$10$" (or "$2$10$", whose 60th bcrypt ignores), hold one
	// bcrypt does not write: one outside its base64 alphabet (reading the
	// salt fails; no hash bcrypt makes holds it), or a last one whose 2 bits
	// past the hash's 184 are not 0.
	const alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	i := 7
	if h[2] == '$' {
		i = 6 // no minor version
	}
	if len(h) != 60 || strings.Trim(h[i:i+53], alphabet) != "" || strings.IndexByte(alphabet, h[i+52])%4 != 0 {
		return 0, fmt.Errorf("%d characters, want 60 of its alphabet as bcrypt writes them", len(h))
	}
	return c, nil
}

// Logins are the settings a login is checked against that SetLogins may
// change while the server runs: the fields of the same names.
type Logins struct {
	AuthorizedKeysFiles    []string
	TrustedUserCAKeysFiles []string
	PasswordHashes         map[string]string
}

// ErrPasswordLoginOff is SetLogins' answer to password hashes given to a
// server that started without any: password login is offered or not from the
// start, so they are used only after a restart.
var ErrPasswordLoginOff error = &errorString{"sshd: password login was off at start: the password hashes are used after a restart"}

// SetLogins replaces the Logins for every login from now on, as OpenSSH's
// sshd reads its configuration again on SIGHUP: a key, certificate authority
// or password taken away no longer logs in. Connections that have logged in
// keep their sessions. A hash that is not bcrypt's is an error, and nothing
// changes. Password login is offered or not from the start: taking every hash
// away refuses every password, offered until a restart. The caller must not
// change the slices and map afterwards.
//
// Hashes of another bcrypt cost than before make a new dummy hash (for users
// without a password) after SetLogins returns: seconds on a router's CPU at
// cost 12, tens of seconds at 14, which the agent's reload, run where it
// waits for SIGTERM, must not wait for (the init system kills an agent that
// does not stop). The new logins apply at once; until the dummy is made, users
// without a password are checked against the old one.
func (s *Server) SetLogins(l Logins) error {
	if _, err := HashesCost(l.PasswordHashes); err != nil {
		return err
	}
	s.set.Store(&l)
	if s.setUp.Load() && s.passwordOn.Load() {
		go func() {
			if err := s.updateDummy(); err != nil {
				s.log().Error("password login: keeping the previous dummy hash", "error", err)
			}
		}()
	}
	if len(l.PasswordHashes) > 0 && s.setUp.Load() && !s.passwordOn.Load() {
		return ErrPasswordLoginOff
	}
	return nil
}

// logins are the Logins in effect: SetLogins' last, or the fields.
func (s *Server) logins() *Logins {
	if l := s.set.Load(); l != nil {
		return l
	}
	return &Logins{AuthorizedKeysFiles: s.AuthorizedKeysFiles, TrustedUserCAKeysFiles: s.TrustedUserCAKeysFiles, PasswordHashes: s.PasswordHashes}
}
