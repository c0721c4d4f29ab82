//go:build tools

// Package runsc only names what scripts/install.sh builds, so that go.mod and go.sum
// cover its dependencies.
package runsc

import _ "gvisor.dev/gvisor/runsc"
