package se

import (
	"bytes"
	"testing"
)

// FuzzFlatFields: wherever the direct reader answers, encoding/json reads
// the same fields.
func FuzzFlatFields(f *testing.F) {
	for _, s := range []string{
		`{"measurement":"AAAA","cuid":"AQID"}`, ` { "user_data" : "" } `, `{}`, `{"MEASUREMENT":"AAAA"}`,
		`{"measurement":"AAAA","measurement":"AQID"}`, `{"measurement":"AA\u0041A"}`, `{"x":1}`, `{"cuid":"AAAA"} x`,
		`{"x":"a\","measurement":"AAAA"}`, "{\"cuid\":\"AA\nAA\"}", `{"x":"\u00e9","cuid":"AAAA"}`,
		"{\"cuid\":\"AAAA\n\"}", "{\"cuid\":\"AA==\n\n\n\n\"}", "{\"cuid\":\"AAAA\r\n\r\n\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast := make([][]byte, len(fieldNames))
		if !flatFields(b, fieldNames[:], fast) || !decodeAll(fast, new([]byte)) {
			return
		}
		slow, err := jsonFields(b)
		if err != nil {
			t.Fatalf("%q: direct reader accepted what encoding/json refuses: %v", b, err)
		}
		for i := range fast {
			if (fast[i] == nil) != (slow[i] == nil) || !bytes.Equal(fast[i], slow[i]) {
				t.Fatalf("%q: %s = %q directly, %q with encoding/json", b, fieldNames[i], fast[i], slow[i])
			}
		}
	})
}
