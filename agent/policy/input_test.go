package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func inputJSON(t *testing.T, m proto.Message) any {
	t.Helper()
	in, err := requestInput(m)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ast.JSON(in)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInputShape: the input is what Kata's agent gives its policy.
func TestInputShape(t *testing.T) {
	req := &pb.CreateContainerRequest{ContainerId: "c", OCI: &pb.Spec{
		Process: &pb.Process{Args: []string{"/app"}, OOMScoreAdj: -998, Rlimits: []*pb.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1<<64 - 1}}},
		Mounts:  []*pb.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &pb.Linux{Seccomp: &pb.LinuxSeccomp{Syscalls: []*pb.LinuxSyscall{
			{Names: []string{"ptrace"}, Action: "SCMP_ACT_ERRNO", ErrnoRet: &pb.LinuxSyscall_Errnoret{Errnoret: 1}},
			{Names: []string{"read"}, Action: "SCMP_ACT_ALLOW"}}}},
	}}
	got := inputJSON(t, req).(map[string]any)
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	oci := got["OCI"].(map[string]any)
	for name, tc := range map[string]struct {
		got  any
		want string
	}{
		"unset message is null":   {got["string_user"], `null`},
		"empty list":              {got["devices"], `[]`},
		"int64 is a number":       {oci["Process"].(map[string]any)["OOMScoreAdj"], `-998`},
		"uint64 keeps its digits": {js(oci["Process"].(map[string]any)["Rlimits"]), `"[{\"Hard\":18446744073709551615,\"Soft\":0,\"Type\":\"RLIMIT_NOFILE\"}]"`},
		"keyword field is type_":  {js(oci["Mounts"]), `"[{\"destination\":\"/proc\",\"options\":[],\"source\":\"proc\",\"type_\":\"proc\"}]"`},
		"empty map":               {oci["Annotations"], `{}`},
		"oneof set":               {oci["Linux"].(map[string]any)["Seccomp"].(map[string]any)["Syscalls"].([]any)[0].(map[string]any)["ErrnoRet"], `{"errnoret":1}`},
		"oneof unset":             {oci["Linux"].(map[string]any)["Seccomp"].(map[string]any)["Syscalls"].([]any)[1].(map[string]any)["ErrnoRet"], `null`},
	} {
		if g := js(tc.got); g != tc.want {
			t.Errorf("%s: %s, want %s", name, g, tc.want)
		}
	}
	if g := js(inputJSON(t, &pb.WriteStreamRequest{ContainerId: "c", Data: []byte{0, 'a', 255}})); g != `{"container_id":"c","data":[0,97,255],"exec_id":""}` {
		t.Errorf("bytes: %s", g)
	}
	if g := js(inputJSON(t, &pb.StatsContainerResponse{CgroupStats: &pb.CgroupStats{MemoryStats: &pb.MemoryStats{Stats: map[string]uint64{"rss": 7}}}})); g !=
		`{"cgroup_stats":{"cpu_stats":null,"memory_stats":{"cache":0,"kernel_usage":null,"stats":{"rss":7},"swap_usage":null,"usage":null,"use_hierarchy":false},"pids_stats":null},"network_stats":[]}` {
		t.Errorf("map: %s", g)
	}
}

var update = flag.Bool("update", false, "rewrite testdata/input/*.json")

// TestInputGolden: each request's input, key by key, as Kata's agent
// serialises it: testdata/input/<request>.json (when written, compared
// with the requests of genpolicy's policy tests: they decode here with no
// unknown field and render back with every key and value they have).
func TestInputGolden(t *testing.T) {
	for rule, req := range requests() {
		got, err := json.MarshalIndent(inputJSON(t, req), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join("testdata", "input", rule+".json")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (a new request? check its input and write it with: go test ./agent/policy -run TestInputGolden -args -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: input\n%s\nwant\n%s", rule, got, want)
		}
	}
}

// TestInputNamesMatchProtojson: apart from Rust keywords and oneofs, the
// input's keys are protojson's proto names, for every request the agent
// serves, fully populated.
func TestInputNamesMatchProtojson(t *testing.T) {
	for rule, req := range requests() {
		if rule == "CopyFileRequest" {
			continue // Kata's digest of the request: copyfile.go
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var want any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if g, w := keys(inputJSON(t, req), ""), keys(want, ""); !reflect.DeepEqual(g, w) {
			t.Errorf("%s: keys\n%v\nwant\n%v", rule, g, w)
		}
	}
}

// keys lists the object keys of v by path, "type_" read as "type".
func keys(v any, path string) map[string]bool {
	out := map[string]bool{}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "type_" {
				k = "type"
			}
			out[path+"/"+k] = true
			for p := range keys(x, path+"/"+k) {
				out[p] = true
			}
		}
	case []any:
		for _, x := range v {
			for p := range keys(x, path+"[]") {
				out[p] = true
			}
		}
	}
	return out
}

func BenchmarkInput(b *testing.B) {
	req := requests()["CreateContainerRequest"].ProtoReflect()
	for b.Loop() {
		inputOf(req)
	}
}
