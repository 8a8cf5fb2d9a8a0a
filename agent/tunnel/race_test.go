//go:build race

package tunnel_test

// raceEnabled: under the race detector (about 10× slower) the big end-to-end
// transfers shrink; `make test` also runs them at full size without it.
const raceEnabled = true
