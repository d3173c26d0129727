package gqlpushjwt_test

import (
	"testing"

	"go.uber.org/goleak"
)

// keyfunc's refresh goroutine ends soon after Close, not before it returns
// (see Authenticator.Close): goleak waits for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
