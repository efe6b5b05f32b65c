package policy

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TestCopyFileInput: CopyFile is decided on Kata's digest of the request.
func TestCopyFileInput(t *testing.T) {
	for name, tc := range map[string]struct {
		req  *pb.CopyFileRequest
		want string
	}{
		"file": {&pb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/c-hosts", FileSize: 3, FileMode: 0o100644,
			DirMode: 0o40750, Uid: -1, Gid: 5, Offset: 2, Data: []byte("abc")},
			`{"dir_mode":16872,"file_mode":33188,"file_size":3,"file_type":"Regular","gid":5,"offset":2,"path":"/run/kata-containers/shared/containers/c-hosts","symlink_target":null,"uid":-1}`},
		"directory": {&pb.CopyFileRequest{Path: "/d", FileMode: 0o40755},
			`{"dir_mode":0,"file_mode":16877,"file_size":0,"file_type":"Directory","gid":0,"offset":0,"path":"/d","symlink_target":null,"uid":0}`},
		"symlink": {&pb.CopyFileRequest{Path: "/d/..data", FileMode: 0o120777, Data: []byte("..2026_12_04")},
			`{"dir_mode":0,"file_mode":41471,"file_size":0,"file_type":"Symlink","gid":0,"offset":0,"path":"/d/..data","symlink_target":"..2026_12_04","uid":0}`},
		"removal (Cocoon's)": {&pb.CopyFileRequest{Path: "/d/..2026_12_03", Remove: true},
			`{"dir_mode":0,"file_mode":0,"file_size":0,"file_type":"Unknown","gid":0,"offset":0,"path":"/d/..2026_12_03","remove":true,"symlink_target":null,"uid":0}`},
		"socket": {&pb.CopyFileRequest{Path: "/s", FileMode: 0o140755},
			`{"dir_mode":0,"file_mode":49645,"file_size":0,"file_type":"Unknown","gid":0,"offset":0,"path":"/s","symlink_target":null,"uid":0}`},
	} {
		b, _ := json.Marshal(inputJSON(t, tc.req))
		if string(b) != tc.want {
			t.Errorf("%s: %s\nwant %s", name, b, tc.want)
		}
	}

	// A genpolicy-style rule reads the kind and the target; a symlink
	// whose target is not text is refused before any rule runs.
	e := mustNew(t, `package agent_policy
import rego.v1
default AllowRequestsFailingPolicy := true
CopyFileRequest if {
	input.file_type == "Symlink"
	not startswith(input.symlink_target, "/")
}`)
	ctx := context.Background()
	if err := e.Check(ctx, "CopyFile", &pb.CopyFileRequest{Path: "/d/l", FileMode: 0o120777, Data: []byte("x")}); err != nil {
		t.Errorf("relative symlink: %v", err)
	}
	err := e.Check(ctx, "CopyFile", &pb.CopyFileRequest{Path: "/d/l", FileMode: 0o120777, Data: []byte{0xff, '/'}})
	if !errors.Is(err, ErrDenied) {
		t.Errorf("symlink to bytes: %v, want ErrDenied even failing open", err)
	}
}
