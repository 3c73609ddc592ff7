// Package version holds the build's version, stamped by the Makefile from the
// VERSION file so that binaries and the image tag always agree.
package version

// Version is set at link time with
// -ldflags "-X github.com/twill-net/twill/version.Version=…".
var Version = "dev"
