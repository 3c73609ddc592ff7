// Package savedconf keeps the delegate configuration each pod was added with,
// one file per container ID, in flannel's layout (the file holds exactly the
// JSON handed to the delegate). DEL and CHECK then use the configuration the
// pod was made with, even after subnet.env or the CNI configuration changed.
//
// The layout is versioned by a marker file, .format, holding
// "twill-savedconf <N>". A directory without one is flannel's layout, which
// is format 1; a format this build does not know (a newer Twill's, after a
// downgrade) is refused with an error that says so, never misread.
package savedconf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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

// Format is the layout this build reads and writes: one file per
// container holding the delegate's JSON, as flannel keeps them.
const Format = 1

// markerFile names the format marker in the directory; a dot file, so
// List (and flannel, which reads only container IDs) passes it by.
const markerFile = ".format"

const markerPrefix = "twill-savedconf "

// marker is the marker's content for Format.
var marker = []byte(markerPrefix + strconv.Itoa(Format) + "\n")

// ErrFormat is returned (wrapped) when the directory's layout is not one
// this build knows.
var ErrFormat = errors.New("unknown saved-configuration format")

// checkFormat reads the directory's format marker: none (flannel's layout,
// or nothing saved yet) and Format are fine; anything else is an error
// wrapping ErrFormat that says what to do. exists reports a marker.
func (s Store) checkFormat() (exists bool, err error) {
	p := filepath.Join(s.Dir, markerFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the format of the saved configurations: %w", err)
	}
	if bytes.Equal(data, marker) {
		return true, nil
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(data)), markerPrefix)
	n, convErr := strconv.Atoi(rest)
	switch {
	case !ok || convErr != nil:
		return true, fmt.Errorf("%w: %s holds %q, not %q; restore it or remove it only if the files beside it are flannel's (one delegate configuration per container)", ErrFormat, p, data, strings.TrimSpace(string(marker)))
	case n > Format:
		return true, fmt.Errorf("%w: %s says format %d, newer than this plugin's %d: a newer Twill saved these pods' configurations; upgrade Twill again to manage them", ErrFormat, p, n, Format)
	default:
		return true, fmt.Errorf("%w: %s says format %d, which no Twill wrote (this plugin's is %d); restore it", ErrFormat, p, n, Format)
	}
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
	marked, err := s.checkFormat()
	if err != nil {
		return err
	}
	if !marked {
		if err := atomicfile.Replace(filepath.Join(s.Dir, markerFile), marker, 0o600); err != nil {
			return fmt.Errorf("marking the format of %s: %w", s.Dir, err)
		}
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
	if _, err := s.checkFormat(); err != nil {
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
