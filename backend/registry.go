package backend

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/twill-net/twill/backend/kernel"
)

// Registry maps backend type names to plugins. The set of backends flanneld
// has is one Registry value (see backend/builtin), not global state.
type Registry struct {
	plugins []Plugin
}

// NewRegistry returns a registry of plugins; the first is the default, used
// when net-conf.json names no type.
func NewRegistry(plugins ...Plugin) *Registry {
	return &Registry{plugins: plugins}
}

// Types lists the registered type names, the default first.
func (r *Registry) Types() []string {
	out := make([]string, len(r.plugins))
	for i, p := range r.plugins {
		out[i] = p.Type()
	}
	return out
}

// Lookup returns the plugin of type typ; "" is the default.
func (r *Registry) Lookup(typ string) (Plugin, error) {
	if typ == "" && len(r.plugins) > 0 {
		return r.plugins[0], nil
	}
	for _, p := range r.plugins {
		if p.Type() == strings.ToLower(typ) {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%q is not supported; use %s: %w", typ, r.typeList(), ErrUnknownType)
}

// Chosen is the backend net-conf.json selects, with its section parsed.
type Chosen struct {
	Plugin Plugin
	Config Config
}

// Parse returns the backend net-conf.json's Backend section selects (typ is
// its Type, raw the section) with the section parsed by it. Errors name the
// key at fault.
func (r *Registry) Parse(typ string, raw json.RawMessage) (Chosen, error) {
	p, err := r.Lookup(typ)
	if err != nil {
		return Chosen{}, fmt.Errorf(`"Backend.Type": %w`, err)
	}
	cfg, err := p.ParseConfig(raw)
	if err != nil {
		return Chosen{}, err
	}
	return Chosen{Plugin: p, Config: cfg}, nil
}

// Teardown removes what every plugin but keep leaves on a node, so a node
// that switched backends keeps nothing of the old one.
func (r *Registry) Teardown(k kernel.Kernel, keep Plugin) error {
	for _, p := range r.plugins {
		if p.Type() == keep.Type() {
			continue
		}
		if err := p.Teardown(k); err != nil {
			return fmt.Errorf("removing what the %s backend left: %w", p.Type(), err)
		}
	}
	return nil
}

func (r *Registry) typeList() string {
	q := make([]string, len(r.plugins))
	for i, t := range r.Types() {
		q[i] = fmt.Sprintf("%q", t)
	}
	if len(q) > 1 {
		return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
	}
	return strings.Join(q, "")
}
