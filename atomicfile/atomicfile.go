// Package atomicfile writes files so that a reader sees either the old or the
// new content, never a partial file: flanneld's subnet.env and CNI config, and
// the CNI plugin's saved delegate configs, are read by other processes at any
// moment.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write stores data at path with mode perm through a temporary file in the
// same directory and a rename, creating the directory if needed. The data
// is on disk (fsync) before the rename, so after a crash path holds the old
// content or the new, whole.
func Write(path string, data []byte, perm os.FileMode) error { return write(path, data, perm, true) }

// Replace is Write without the fsync: readers still see the old content or
// the new, never a part, but a crash of the machine may leave path empty or
// missing. For files whose loss the reader handles, written where an fsync
// (a journal commit, often milliseconds) is too dear.
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("syncing %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	return nil
}
