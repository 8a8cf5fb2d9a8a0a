package tunneld

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// A ListTunnels nextToken is a cursor: the sort key (creation time, tunnel ID) of
// the last tunnel of the page, base64url-encoded. The next page starts after that
// key, not at an offset, so tunnels opened, closed or forgotten between two pages
// never make a page repeat or skip one (an offset into a newest-first list shifts
// with every open). The key stays meaningful when its tunnel is gone.
type cursor struct {
	created time.Time
	id      string
}

// cursorVersion is the first byte of an encoded cursor; other versions are refused.
const cursorVersion = 1

func (c cursor) encode() string {
	b := make([]byte, 0, 1+8+len(c.id))
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(c.created.UnixNano()))
	b = append(b, c.id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses a nextToken; a token it did not make is an InvalidRequest.
func decodeCursor(tok string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1+8+1 || b[0] != cursorVersion {
		return cursor{}, invalid("nextToken is not valid")
	}
	id := string(b[9:])
	if checkTunnelID(id) != nil {
		return cursor{}, invalid("nextToken is not valid")
	}
	return cursor{created: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))), id: id}, nil
}

// compareListOrder orders tunnels as ListTunnels lists them: newest first, then by
// ID. Times are compared by their wall-clock readings, what a cursor encodes:
// Compare would use the monotonic readings of two records' CreatedAt (from
// time.Now) but the wall clock against a cursor, and after the wall clock was
// stepped the two orders differ, so a page skipped or repeated a tunnel.
func compareListOrder(a, b cursor) int {
	if c := cmp.Compare(b.created.UnixNano(), a.created.UnixNano()); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}
