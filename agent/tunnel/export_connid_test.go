package tunnel

// SetLastConnID sets the last connection id src gave on the stream of service
// wire, as 2^32 connections opened on it would have left it.
func SetLastConnID(src *Source, wire string, id uint32) {
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.connIDs == nil {
		src.connIDs = map[string]uint32{}
	}
	src.connIDs[wire] = id
}
