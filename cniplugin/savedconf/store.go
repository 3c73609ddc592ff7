// Package savedconf keeps the delegate configuration each pod was added with,
// one file per container ID, in flannel's layout (the file holds exactly the
// JSON handed to the delegate). DEL and CHECK then use the configuration the
// pod was made with, even after subnet.env or the CNI configuration changed.
package savedconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/twill-net/twill/atomicfile"
)

// ErrNotFound is returned (wrapped) when no configuration is saved for a
// container.
var ErrNotFound = errors.New("no saved configuration")

// Store is a directory of saved configurations.
type Store struct {
	Dir string
}

// path returns the file for id, refusing IDs that would escape the directory
// or collide with temporary files.
func (s Store) path(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\\\x00") || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("container ID %q cannot name a file", id)
	}
	return filepath.Join(s.Dir, id), nil
}

// Save stores data for id atomically, readable by root only (the
// configuration may carry runtime arguments). It does not fsync: that cost
// every pod's ADD a journal commit (a millisecond or more), and a file a
// crash of the machine loses or empties only sends DEL to the configuration
// from subnet.env, which releases the same address.
func (s Store) Save(id string, data []byte) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", s.Dir, err)
	}
	if err := atomicfile.Replace(p, data, 0o600); err != nil {
		return fmt.Errorf("saving the configuration of container %s: %w", id, err)
	}
	return nil
}

// Load returns the saved configuration of id, or an error wrapping
// ErrNotFound.
func (s Store) Load(id string) ([]byte, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w for container %s in %s", ErrNotFound, id, s.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the saved configuration of container %s: %w", id, err)
	}
	return data, nil
}

// Remove deletes the saved configuration of id; a missing file is not an
// error.
func (s Store) Remove(id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the saved configuration of container %s: %w", id, err)
	}
	return nil
}

// List returns the container IDs that have a saved configuration. A missing
// directory is an empty store.
func (s Store) List() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing saved configurations in %s: %w", s.Dir, err)
	}
	var ids []string
	for _, e := range entries {
		// Dot files are atomicfile's temporaries.
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		ids = append(ids, e.Name())
	}
	return ids, nil
}
