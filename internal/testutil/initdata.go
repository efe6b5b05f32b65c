package testutil

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"testing"
)

// InitdataAnnotation is the value of Kata's cc_init_data annotation
// (io.katacontainers.config.hypervisor.cc_init_data) for an initdata
// document holding the agent policy rego: gzip-compressed, base64-encoded.
func InitdataAnnotation(t testing.TB, rego string) string {
	t.Helper()
	return InitdataDocAnnotation(t, "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = '''\n"+rego+"\n'''\n")
}

// KBSInitdata is an initdata document whose attestation agent and CDH use
// the KBS at url, trusting the PEM certificate caPEM when it is not empty,
// with the agent policy rego.
func KBSInitdata(url, caPEM, rego string) string {
	var aaCert, cdhCert string
	if caPEM != "" {
		aaCert, cdhCert = "cert = \"\"\"\n"+caPEM+"\"\"\"\n", "kbs_cert = \"\"\"\n"+caPEM+"\"\"\"\n"
	}
	return "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n" +
		"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"" + url + "\"\n" + aaCert + "'''\n" +
		"\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + url + "\"\n" + cdhCert + "'''\n" +
		"\"policy.rego\" = '''\n" + rego + "\n'''\n"
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

// SPIFFEPolicy is a KBS SPIFFE policy giving the ID paths below prefix to
// any appraisal, the sample TEE's too, which proves nothing: TCG guests
// have no other. A real policy requires an affirming hardware TEE.
func SPIFFEPolicy(prefix string) string {
	return fmt.Sprintf("package policy\nimport rego.v1\ndefault allow := false\nallow if startswith(data.path, %q)\n", prefix)
}

// SPIFFEInitdata is an initdata document for a pod with an SVID: the data
// hub's KBS, the SPIFFE ID (spiffe.toml), more files of [data] (TOML
// entries, "" for none) and the agent policy rego.
func SPIFFEInitdata(kbsURL, id, files, rego string) string {
	return fmt.Sprintf("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n'''\n"+
		"\"spiffe.toml\" = 'id = %q'\n%s\"policy.rego\" = '''\n%s\n'''\n", kbsURL, id, files, rego)
}

// MeshInitdata is SPIFFEInitdata for a pod of the attested mesh, with its
// rules (mesh.toml).
func MeshInitdata(kbsURL, id, meshToml, rego string) string {
	return SPIFFEInitdata(kbsURL, id, "\"mesh.toml\" = '''\n"+meshToml+"'''\n", rego)
}
