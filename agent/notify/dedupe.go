package notify

import (
	"crypto/sha256"
	"sync"
)

// dedupeSize is how many recent payloads are remembered. A duplicate is a
// QoS 1 redelivery (after a reconnect, or a broker that resends) or the
// same notification published twice; both arrive close together, and a
// tunnel token is single-use, so a short memory is enough.
const dedupeSize = 64

// dedupe remembers the SHA-256 of the last dedupeSize payloads, in bounded
// memory (about 4 KiB). The zero value is ready to use.
type dedupe struct {
	mu   sync.Mutex
	ring [dedupeSize][sha256.Size]byte  // oldest is overwritten first
	next int                            // index in ring of the next write
	n    int                            // entries in use, up to dedupeSize
	set  map[[sha256.Size]byte]struct{} // the hashes in ring
}

// seen reports whether payload was among the last dedupeSize payloads, and
// records it.
func (d *dedupe) seen(payload []byte) bool {
	h := sha256.Sum256(payload)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.set == nil {
		d.set = make(map[[sha256.Size]byte]struct{}, dedupeSize)
	}
	if _, ok := d.set[h]; ok {
		return true
	}
	if d.n == dedupeSize {
		delete(d.set, d.ring[d.next]) // ring holds no duplicates
	} else {
		d.n++
	}
	d.ring[d.next] = h
	d.set[h] = struct{}{}
	d.next = (d.next + 1) % dedupeSize
	return false
}
