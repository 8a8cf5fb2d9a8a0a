// Package sshd is porthole's embedded SSH server: the device's replacement
// for dropbear or OpenSSH, normally reached only through a Secure Tunneling
// stream. It is built on github.com/gliderlabs/ssh and
// golang.org/x/crypto/ssh, with its own session, forwarding and
// authentication handlers (gliderlabs' defaults accept everyone and race
// window changes against the program's start).
//
// # Serving
//
// A Server is configured through its exported fields, like http.Server,
// and serves a net.Listener (Serve) or a single net.Conn such as a tunnel
// stream (ServeConn); it never opens a listener itself. ServeConn works on
// any net.Conn: timeouts are timers, not deadlines. Shutdown stops
// accepting and waits for the connections to end; Close ends them at once.
// After either, Serve returns ErrServerClosed, and so does a ServeConn called
// then (one already serving its connection returns nil when it ends).
//
// The server identifies itself as "SSH-2.0-OpenSSH_porthole": OpenSSH's
// client sends some of its extensions (eow@openssh.com among them) only to a
// server whose version starts with "OpenSSH".
//
// Key exchanges and MACs are x/crypto's defaults without the two it lists
// as insecure, diffie-hellman-group14-sha1 and hmac-sha1-96, which OpenSSH
// 9.2's sshd does not offer either (hmac-sha1 stays, as in OpenSSH 9.2).
// The ciphers are Ciphers, or x/crypto's defaults (on amd64 with AES-NI
// without ChaCha20, so that clients pick AES: see aesHardware).
//
// The host key is ed25519, made on first start in DataDir (HostKeyFile),
// written atomically with mode 0600 and reused from then on; a corrupt,
// too-open or not regular key file, or one the server may not read, is an
// error wrapping ErrHostKey (a restart cannot cure it; I/O errors and
// failures to create the key do not wrap it), never replaced. A HostKeyFile
// that is a symbolic link to nothing (a read-only root file system linking it
// to storage) is made at the link's target, in a directory only root or the
// server's user may write, and its .pub next to it there; later starts mend
// that .pub and a crash's temporary files there, and write nothing at the
// link's name (see mendAfterCrash for why). HostKeyFiles adds more keys; an
// RSA key under 1024 bits among them cannot sign (Go's crypto/rsa refuses it,
// as OpenSSH 9.1+ does) and is left out with a warning, unless it is the only
// key. Without a host key the server does not start.
//
// Every file read at start or login (host keys, authorized_keys, trusted CA
// keys, passwd, group) must be a regular file: it is opened without
// blocking and anything else (a FIFO, a device, a directory) is refused with
// a log line before a byte is read. authorized_keys, CA key, passwd and group
// files are read up to 4 MiB, and a line over 1 MiB is skipped (logged with
// its number, not its content) without losing the lines after it. The lines
// these files skip (over-long or unusable), and why one of them or the shadow
// file is ignored or cannot be read (not a regular file, an unsafe mode or
// owner, a CA keys file missing), are warned about at the first read that
// finds them in this version of the file (its inode, size and times) and
// logged at debug at later reads, which come at every login and, for
// authorized_keys, for every key a client offers; another error (another
// directory or mode) is warned about again, as is one that comes back after
// an authorized_keys or CA keys file was read without one.
//
// # Authentication (deny by default)
//
//   - Public keys from authorized_keys files (AuthorizedKeysFiles, with %h
//     and %u), read at every login and ignored, like sshd's StrictModes,
//     when they or a directory above them (up to the home directory) are
//     writable by group or others or owned by someone other than root or
//     the user; through a symbolic link, so is the file it leads to, with
//     the directories above it, as sshd checks the real path, and the
//     directory of every link followed on the way (the same holds for
//     TrustedUserCAKeysFiles, up to /, where a sticky directory may be
//     writable and a link in it must be root's or the server's user's).
//     A file its user could make lead elsewhere is read with the user's
//     permissions (uid, groups), as sshd reads it: with root's, a user's
//     link to a file only root may read told them whether a key was in it.
//     Honoured options: command=, from=
//     (addresses, wildcards and CIDR blocks; no DNS; a login through a
//     tunnel stream has no address, so from= and a certificate's
//     source-address never match it: such a key logs in only over a
//     listener), no-pty,
//     no-port-forwarding, no-agent-forwarding, restrict (with pty,
//     port-forwarding, agent-forwarding), permitopen=, permitlisten=,
//     expiry-time= (local time, or UTC with a Z or UTC suffix),
//     cert-authority with principals=, no-touch-required and
//     touch-required. As in sshd, permitopen= takes host:port or host/port,
//     and permitlisten= [host:]port or [v6]/port; their port is a number or a
//     service name (a line with another is unusable), a host in brackets
//     ends at its first "]", which ":" or "/" must follow (a line with
//     "[h]x:22" or "[h:22" is unusable), permitopen= hosts
//     are compared as written, and permitlisten= hosts are patterns that
//     the requested host, in lower case, must match.
//     no-X11-forwarding, no-user-rc, environment= and tunnel= are accepted
//     and ignored (no such features here; a tunnel= that is not "any" or a
//     tun device number makes the line unusable, as in sshd);
//     verify-required refuses a security key (the user-verified flag
//     cannot be checked; the key's other lines are not tried, as sshd's
//     login ends at the line) and, as in sshd, is ignored for other keys,
//     as is no-verify-required;
//     unknown options make the line unusable, as do,
//     like sshd, two command=, from=
//     or principals= options, principals= on a line without cert-authority,
//     and a from= CIDR block with bits set past its prefix length or a
//     prefix length its address family cannot have (the length is read as
//     sshd's strtoul reads it: /08 is 8) or an empty entry; from=,
//     principals= and a certificate's source-address are split at commas
//     and, as in sshd, not trimmed ("10.0.0.1, 127.0.0.1" does not allow
//     127.0.0.1: its second entry has a space), and their IPv4 addresses
//     are read as sshd's getaddrinfo reads them, by inet_aton(3): 127.1,
//     127.000.000.001, 0177.0.0.1 (octal) and 2130706433 are 127.0.0.1
//     (a source-address entry is an address or CIDR block of hex digits,
//     dots, colons and a slash only, as in sshd, so no 0x7f.0.0.1 there,
//     nor a wildcard); of several expiry-time= the
//     earliest holds (one without Z is in the local zone as libc reads TZ,
//     a POSIX rule such as CET-1CEST,M3.5.0,M10.5.0/3 included, which Go's
//     time.Local takes as UTC; sftp's ls -l times are in it too), and
//     of restrict, no-pty (and the like) and pty (and the like) the last
//     one holds, as in sshd: "pty,restrict" has no pty, "no-pty,pty" has one.
//     A missing file is logged at debug at each login.
//   - As OpenSSH since 8.8 and 8.2: an RSA key must sign with SHA-2
//     (rsa-sha2-256 or -512; ssh-rsa, SHA-1, is refused), and so must the CA
//     of a certificate. An RSA host key (HostKeyFiles) signs with SHA-2
//     only too: rsa-sha2-512 and rsa-sha2-256 are offered, ssh-rsa is not.
//   - User certificates signed by a CA in TrustedUserCAKeysFiles (the login
//     name must be a principal) or by a cert-authority line. As in OpenSSH,
//     the user's cert-authority lines are tried first, so that a line's
//     options (command=, restrict, permitopen=) hold for its CA's certificates
//     even when that CA is trusted server-wide too; a line that refuses the
//     certificate (its from=, principals= or expiry-time=, a command= other
//     than the certificate's force-command, which sshd cannot merge) leaves
//     the next line, then TrustedUserCAKeysFiles, to decide, and the refusal
//     names the reason of the line or CA that trusted the certificate for
//     the user, if one did. Validity,
//     principals, the force-command and source-address critical options and
//     the permit-pty, permit-port-forwarding and permit-agent-forwarding
//     extensions are honoured; other critical options refuse the
//     certificate, as do certificates without principals.
//   - A FIDO security key (sk-*) must be touched for each login unless
//     no-touch-required says otherwise: on its authorized_keys line; for a
//     certificate, in the certificate and, for a cert-authority line, on the
//     line too. A security key's certificate with no-touch-required under a
//     cert-authority line without it is refused, touched or not: x/crypto
//     would honour the certificate's word alone. Such a line, or one with
//     verify-required, ends the login there, as in sshd: no later line or
//     trusted CA admits the certificate without its options.
//   - Passwords only when PasswordHashes (bcrypt) is not empty; otherwise the
//     method is not even offered. An empty password is refused, whatever the
//     hash, as with OpenSSH's PermitEmptyPasswords no. A password for a user
//     without a hash is checked against a dummy hash of the highest cost
//     among the hashes (made again after SetLogins when that changes,
//     without holding it up), so that its refusal takes no less time than a
//     known user's; give every hash the same cost, or the users of the lower
//     costs are told apart by quicker refusals. Keyboard-interactive, GSSAPI
//     and host-based authentication are not supported.
//   - As in OpenSSH's sshd (auth2.c), a refused public key, certificate or
//     password is answered no sooner than 5 to 9.3 ms after it was asked: a
//     time fixed per user name by a random secret of the process, doubled
//     until it is still ahead if the check took longer. So a missing user,
//     whose refusal reads no files, and a certificate of a CA that is not
//     trusted are not told from the others by a quicker answer.
//
// When no method can work (no password hash of a user who may log in, no
// key in the trusted CA files, and no authorized_keys file that a login would
// read and that holds a key, for any user who may log in: CheckLogins), the
// server logs one warning as it starts (PublicKeys, Serve or ServeConn,
// whichever comes first), unless CallerChecksLogins is set.
//
// Login users come from the passwd file (PasswdFile), parsed directly so
// that static osusergo builds and BusyBox systems work. Running as root, a
// session runs as the login user (uid, gid, supplementary groups from
// GroupFile, home, shell; an empty shell field means /bin/sh); unknown users
// are refused. Not running as root, only the server's own user may log in.
// As with OpenSSH without PAM, disabled accounts are refused whatever the
// method (ErrUserNotAllowed, logged with the reason; the client sees an
// authentication failure): a login shell that does not exist or is not
// executable, and, when the shadow file ("shadow" next to the passwd file,
// so /etc/shadow) exists and is readable, a password field starting with
// "!" (locked; "*" only means no password, and keys still work) or an
// expiry date in the past. For a user the shadow file does not list (or
// without one), a "!" at the start of the passwd file's own password field
// locks the account. While /etc/nologin exists, a session (shell, command,
// SFTP) of a user other than root gets the file's text on stderr and exit
// status 254 instead, as from OpenSSH's do_nologin; port forwarding is not
// affected, as there.
//
// MaxAuthTries and LoginGraceTime bound each connection; as in OpenSSH, every
// public key refused counts against MaxAuthTries, the client's queries (before
// it signs) too, and once that many are refused no key logs in on that
// connection. A per-source limit
// (MaxAuthFailures per AuthFailureWindow) counts every refused password as it
// is checked, and each connection that ends without logging in and without a
// refused password; once a source is over it, its new connections and its
// connections not yet logged in are closed. Keys that are not authorized are
// not counted one by one, nor refusals for the server's own lack of file
// descriptors or memory (reading /etc/passwd or authorized_keys), which judge
// no guess: a connection with only such refusals is not counted. MaxStartups (default 10) connections may be in key
// exchange or authentication at once, at most half of them (at least one) from
// one source (an address, or a tunnel's service); more wait their turn, up to ten times
// that many, and beyond that are closed at once, with one log line every 10 s.
// At most half the CPUs (at least one) check passwords at once; other checks
// wait, at most for the login grace time. A connection that sends more than
// 512 KiB before it has logged in is closed (a key exchange and its keys are a
// few KiB): x/crypto reads ahead of its authentication loop, and would queue
// megabytes while a password check runs.
//
// # Sessions
//
// Shells run the user's shell as a login shell, on a pty when one is
// requested; commands run as "shell -c command". Every program starts a
// new session (setsid), so it never shares the server's controlling
// terminal; a pty is its controlling terminal, owned by the user, with
// group "tty" and mode 0620 when the group file has a tty group, else
// the user's group and mode 0600. Exit status and exit signal are sent
// back (a signal RFC 4254 does not name, such as SIGBUS, as exit status
// 128+n, as a shell reports it, where OpenSSH sends "SIG@openssh.com" and its
// client exits 255), client EOF closes the program's stdin (so "ssh host cmd < file"
// works), "eow@openssh.com" (the client reads no more of
// stdout, as in "ssh host yes | head -1") stops reading the program's stdout
// so that its next write there gets SIGPIPE (on a pty, the terminal is hung
// up) and stdout not yet sent is dropped, while its stderr is still sent, as
// sshd does, "signal" requests reach the program's
// process group (as OpenSSH's killpg, with the user's effective uid; refused
// to a forced command), and
// window changes are applied in request order: one that arrives before the
// shell starts sets the size the shell starts with. The environment is
// HOME, USER, LOGNAME, SHELL, PATH, TERM, SSH_CLIENT, SSH_CONNECTION,
// SSH_TTY, SSH_ORIGINAL_COMMAND (with a forced command), SSH_AUTH_SOCK
// (with agent forwarding), MAIL, the server's TZ and client variables
// matching AcceptEnv. As with OpenSSH, a home directory that is missing, not
// a directory or one the user may not enter is reported and the session runs
// in / instead, and the process umask gets group and world write added at
// the first Serve (sessions' programs inherit it). Pty terminal modes sent by the client are
// applied (line speeds aside), and there are no MOTD, lastlog, utmp records,
// rc files or X11 forwarding. As with OpenSSH, a session stays open while a
// background process still holds the command's output. When the client goes
// away, a program still running gets SIGHUP (to its process group; with a
// pty the terminal hangs up too), with or without a pty: a dropped tunnel
// ends what the operator left running, as a dropped modem line does. A
// program that ignores it (nohup, a job that must outlive the link) is
// never killed: two seconds later the session ends without it, its output
// no longer read, as OpenSSH's sshd leaves it. Once the command itself has
// exited, what it left behind is not signalled, its output is just no
// longer read.
//
// The SFTP subsystem (pkg/sftp) and legacy scp ("scp -O": scp -t and
// scp -f with -r, -p, -d) are served in-process, so the device needs no
// sftp-server or scp binary. "internal-sftp" works as a forced command, as
// in OpenSSH: the key gets SFTP and nothing else (a shell or command gets
// "This service allows sftp connections only." and exit status 1), and with
// -R a read-only SFTP, every request that would change a file refused
// ("permission denied"); -e, -f and -l are accepted and change nothing, and a
// key with any other option (-d, -u, -P, -p) is refused SFTP rather than
// served without it. Under any forced command, SSH_ORIGINAL_COMMAND of an
// sftp subsystem request is the device's sftp-server, or "internal-sftp"
// without one; a signal request to a subsystem is refused, as OpenSSH does.
// scp's paths are taken as the user's shell would take them: quoting,
// globbing (scp -f), $NAME and ${NAME} from the environment a command gets,
// and a leading ~ or ~user; a name not in that environment and the shell's
// other expansions (command substitution, arithmetic, special parameters, ~+,
// $'...') are refused with an error that the client prints.
// As with OpenSSH's sftp-server, a symbolic link's target is stored as the
// client sent it, relative or absolute, and directory listings include "."
// and ".." and long names in its "ls -l" format (with the year for a time in
// the future or more than six months ago). Paths are taken as the kernel
// takes them, not cleaned lexically, and REALPATH (scp -r, sftp's cd, put -r
// and get -r) resolves symbolic links before "..", as sftp-server does: with
// deep a link to dir/sub, "deep/../x" is ~/dir/x. Besides pkg/sftp's extensions
// (posix-rename, statvfs, hardlink) it serves expand-path@openssh.com, which
// scp's default SFTP mode needs for host:~user/path, limits@openssh.com
// (OpenSSH 8.7+ then uploads in 255 KiB writes instead of 32 KiB) and
// users-groups-by-id@openssh.com (sftp's ls -l names owners and groups from
// the server's passwd and group files) and fsync@openssh.com (sftp -f and
// put -f have an upload flushed to storage before they report it done; a
// power cut after a plain put can lose what the page cache held: the file is
// flushed with fsync(2) if it is still at the path it was opened by, else
// every file system with sync(2)), and copy-data (sftp's cp, OpenSSH 9.0+:
// the copy stays on the device); not lsetstat@openssh.com (sftp's chown -h on a
// symbolic link says the server does not support it; sshfs, rclone, WinSCP
// and FileZilla do not use it), fstatvfs or home-directory. At most 128 files
// are open per session (limits@openssh.com says so; the 129th OPEN fails with
// "too many open files"), where sftp-server takes as many as its descriptor
// limit. pkg/sftp keeps its descriptors to itself, so fsync and copy-data
// open the file again by the name it was opened by, and only if it
// is still the same file: copy-data refuses a file renamed or replaced since.
// Opened again, a file is checked against its mode: an agent that is not root
// cannot cp a read-only file (the copy is made with the original's mode, and
// opening it again for writing is then refused), which sftp-server can. A
// WRITE to a file opened to append is served the same way (pkg/sftp writes
// at the offset sent), with the same limits: refused once the file is
// renamed, and, for an agent that is not root, when the file's mode no longer
// lets its owner write (sshfs creating a 0400 file with O_APPEND).
// An empty path names no file (NO_SUCH_FILE), as in sftp-server; REALPATH
// and expand-path take it as ".".
// A request that blocks for good (an OPEN of a FIFO that no program opens
// from the other side, a READ of a terminal) blocks in sftp-server too; here
// the session ends within five seconds once the client has gone, and the
// call is left to return. scp -t refuses a FIFO without a reader at once, and
// one whose write blocks (a FIFO no program reads) ends the same way.
// An OPEN of a terminal (a tty-class device as sysfs says, or one sysfs does
// not list, such as /dev/pts/N) is refused: pkg/sftp opens without O_NOCTTY,
// in the agent's process, which leads its session when an init system runs
// it, so a serial line would become the agent's controlling terminal and a
// ^C on it would stop the agent (sftp-server runs in a session of its own).
// These rules hold for paths up to PATH_MAX: the front sees such a path
// whole, and answers a request whose path, handle or extension name is too
// long for it to see as sftp-server does (a path: "file name too long",
// BAD_MESSAGE).
// On a 32-bit device (arm, mips, 386), a time after January 2038 (sftp put
// -p, scp -p, scp -O -p) is set with utimensat_time64 (Linux 5.1): pkg/sftp's
// os.Chtimes passes a 32-bit time_t, so the front serves such a SETSTAT or
// FSETSTAT itself. A kernel before 5.1 cannot hold the time: SFTP then
// reports EOVERFLOW, and scp -O leaves the time unset, as OpenSSH's scp -t does.
// In-process file access has the server's privileges, so it is used only
// for login users with the server's uid (on a device both are usually
// root). For other users, SFTP runs the system's OpenSSH sftp-server as the
// user if one is installed (and is refused otherwise), through the user's
// shell as sshd runs an external sftp-server (a nologin or git-shell account
// has no SFTP), but for a key limited to internal-sftp, which runs it without
// the shell, as sshd's internal-sftp (no ~/.bashrc, which that key could
// upload, is read; a nologin account has SFTP). scp commands run
// through the user's shell like any command (needing an scp binary). The
// exit status is always sent before the channel closes, as OpenSSH's sftp
// and scp require.
//
// # Forwarding and limits
//
// Local forwarding (ssh -L, direct-tcpip) resolves the destination and
// dials only addresses PermitLocalForward allows (nil: loopback only); a
// failed dial is reported to the client as sshd does ("connect failed:
// Connection refused"). The connection of a user who is not the server's is
// the user's (its socket's owner), as with OpenSSH, whose sshd connects from
// the user's process: rules on a socket's owner (iptables -m owner, nftables
// meta skuid) hold for the user's forwards as for the user's programs.
// Remote forwarding (ssh -R) is off unless PermitRemoteForward is set; a bind
// address of "localhost" (ssh's default) listens on 127.0.0.1 and, where the
// host has IPv6, on ::1 at the same port, as OpenSSH's sshd does; so does
// one asked for on every interface ("", "*", "0.0.0.0", "::") when the policy
// allows "localhost" and not that, as sshd with GatewayPorts no. It
// listens on a privileged port only for a root login (the server, not the
// user, opens the listener, so the kernel's check would not apply): one
// below net.ipv4.ip_unprivileged_port_start, read at each request, or below
// 1024 when that cannot be read; one connection holds at most 16 such
// listeners (they are the agent's own descriptors; a forward on localhost
// holds two). These listeners, and the connections they accept, are the
// server's (root's), unlike OpenSSH's (see listenForward);
// agent forwarding (ssh -A) is off unless AgentForwarding is set, and where
// its socket cannot be made (TMPDIR missing, no descriptors left) only the
// auth-agent-req fails, as with OpenSSH: the session runs without
// SSH_AUTH_SOCK. X11 and
// tun forwarding, and forwarding to or from Unix sockets (ssh -L or -R with a
// socket path) are not supported: such a channel is refused as of an unknown
// type and such a forwarding request fails, which ssh reports (each with a
// forward event, as every forward refused: direction "x11" for ssh -X or -Y,
// whose session still runs, without DISPLAY). IdleTimeout, MaxSessionTime (per
// connection) and MaxSessions (server-wide) bound resources.
//
// # Audit and logs
//
// Audit receives an Event for every successful login and every refused
// authentication attempt or connection (user, method, key fingerprint, for
// a certificate its id, serial and the fingerprint of the CA that signed it,
// remote label, reason), session start and end (command,
// bytes in and out, exit status or signal; the reason when the server ended
// it or wrote the client text of its own: /etc/nologin, a key limited to
// sftp, a home it could not enter, a program that did not start), session
// refused (past MaxSessions, or its shell, exec or subsystem request: the
// reason; such a session has no start or end) and forward (opened or refused).
// A forward whose destination could not be resolved or dialled, or whose
// listener could not be opened, has its event, refused with the error as
// reason, each time; its log line, which a client can repeat at will (a
// channel after another to a closed port), comes at most once every 10 s on
// a connection, with how many were not logged since (not_logged_since_last),
// as the lines of sessions and forwards refused past MaxSessions and
// MaxForwards. So does the line of a forward refused (by the policy, or of a
// kind not supported: tun, X11, agent, Unix sockets), each with its event; a
// connection's first is always logged.
// Public keys refused on a connection that then logs in (clients offer every
// key they hold, in turn) are no failed login: they are logged at debug only,
// and reported as refused attempts when a connection ends without logging in.
// A connection that asked to log in and ended without doing so and without
// such an event (it asked for "none" only, as an OpenSSH client that gives up
// at its password prompt, or x/crypto/ssh ended it over a signature that did
// not verify) has one login-failure event at its end, with x/crypto/ssh's
// error as reason: each failed login that MaxAuthFailures counts has a record.
// The remote label is the client's address, or for a connection without an IP
// address (a tunnel stream) its address with the connection's number after
// a #: tunnel:4f6fd38f/SSH#3. Logs go to Logger, with the same label. Neither ever contains a password or private key.
// A connection that ends after its login because of an error (a protocol
// error x/crypto/ssh drops it for, a reset, the client's disconnect for a
// reason other than its normal end) has one line, "connection ended by an
// error", with the remote, the user and the error.
//
// sshd does not import the tunnel or the agent; it is Linux-only (ptys,
// process credentials).
package sshd
