package tunnel

// Ponged reports whether a pong has come on c, which arms its PongTimeout.
func Ponged(c *Conn) bool { return c.ponged.Load() }
