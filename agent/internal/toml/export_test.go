package toml

// Mirror is the test struct that copies agent.Config's shape, for the test in
// package toml_test that keeps the copy faithful (package toml's own tests
// cannot import agent, which imports this package).
type Mirror = config
