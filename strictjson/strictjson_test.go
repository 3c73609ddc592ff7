package strictjson

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type sec struct {
		VNI  *int
		Type string
	}
	var v sec
	if err := Decode([]byte(`{"vni": 4, "type": "vxlan"}`), &v, "Backend"); err != nil || *v.VNI != 4 {
		t.Fatalf("case-insensitive keys: %+v %v", v, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"VNI": "x"}`, `"Backend.VNI": expected int`},
		{`{"GBP": true}`, `unknown key "GBP" in "Backend"`},
		{`{"VNI": 1} {}`, "unexpected data"},
		{`{"VNI": `, "not valid JSON"},
	} {
		err := Decode([]byte(tc.in), &sec{}, "Backend")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Decode(%s) = %v, want one line with %q", tc.in, err, tc.want)
		}
	}
	if err := Decode(nil, &sec{}, ""); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty input: %v", err)
	}
	if err := Decode([]byte(`{"Netwrok": 1}`), &struct{ Network int }{}, ""); err == nil || !strings.Contains(err.Error(), `unknown key "Netwrok":`) {
		t.Errorf("top-level unknown key: %v", err)
	}
}
