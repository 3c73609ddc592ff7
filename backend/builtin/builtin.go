// Package builtin is the set of backends flanneld is built with: adding a
// backend is one package and one line here.
package builtin

import (
	"github.com/twill-net/twill/backend"
	"github.com/twill-net/twill/backend/hostgw"
	"github.com/twill-net/twill/backend/vxlan"
)

// Registry returns the built-in backends; vxlan, flannel's default, first.
func Registry() *backend.Registry {
	return backend.NewRegistry(vxlan.Plugin, hostgw.Plugin)
}
