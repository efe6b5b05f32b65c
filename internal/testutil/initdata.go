package testutil

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"testing"
)

// InitdataAnnotation is the value of Kata's cc_init_data annotation
// (io.katacontainers.config.hypervisor.cc_init_data) for an initdata
// document holding the agent policy rego: gzip-compressed, base64-encoded.
func InitdataAnnotation(t testing.TB, rego string) string {
	t.Helper()
	return InitdataDocAnnotation(t, "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = '''\n"+rego+"\n'''\n")
}

// InitdataDocAnnotation is the annotation carrying the initdata TOML doc.
func InitdataDocAnnotation(t testing.TB, doc string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(doc))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}
