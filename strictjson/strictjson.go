// Package strictjson decodes configuration written by people (net-conf.json
// and its sections) strictly: an unknown key, data after the object or a
// value of the wrong type is an error, and every error names the key at
// fault in one line.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrEmpty is returned (wrapped) when there is no JSON value at all.
var ErrEmpty = errors.New("empty")

// Decode decodes data into v. Keys are matched case-insensitively, as
// encoding/json (and flannel) do. section, when not empty, is the name of
// the object data holds inside the whole file (e.g. "Backend"): errors name
// keys as "Backend.VNI".
func Decode(data []byte, v any, section string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err, section)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// Key returns the name of key inside section as errors show it, quoted:
// "Backend.VNI".
func Key(section, key string) string {
	if section != "" {
		key = section + "." + key
	}
	return fmt.Sprintf("%q", key)
}

func describe(err error, section string) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("%s: expected %s, got JSON %s", Key(section, typeErr.Field), typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("not valid JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		where := ""
		if section != "" {
			where = fmt.Sprintf(" in %q", section)
		}
		return fmt.Errorf("unknown key %s%s: check its spelling against the configuration reference", field, where)
	case err == io.EOF:
		return ErrEmpty
	}
	return fmt.Errorf("not valid JSON: %w", err)
}
