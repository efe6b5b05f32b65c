package policy

import (
	"context"
	"errors"
	"strings"
	"testing"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// statePolicy keeps state the way genpolicy's rules do: CreateContainer
// records which policy container a container id is, the first sandbox
// name wins, exec looks the container up, RemoveContainer forgets it.
const statePolicy = `package agent_policy
import rego.v1

containers := [
	{"image": "registry.example/app:1", "exec": [["/bin/ls"]]},
	{"image": "registry.example/db:1", "exec": []},
]

CreateContainerRequest := {"ops": ops, "allowed": true} if {
	some idx, c in containers
	input.storages[0].source == c.image
	name := input.OCI.Annotations["io.kubernetes.cri.sandbox-name"]
	ops := array.concat(sandbox_ops(name), [{"op": "add", "path": concat("/", ["/pstate", input.container_id]), "value": idx}])
}

sandbox_ops(name) := [{"op": "add", "path": "/pstate/sandbox_name", "value": name}] if not data.pstate.sandbox_name
sandbox_ops(name) := [] if data.pstate.sandbox_name == name

ExecProcessRequest if {
	idx := data.pstate[input.container_id]
	input.process.Args in containers[idx].exec
}

RemoveContainerRequest := {"ops": [{"op": "remove", "path": concat("/", ["/pstate", input.container_id])}], "allowed": true}

# Raw ops for TestStateOps.
PauseContainerRequest := {"ops": ops, "allowed": true} if ops := json.unmarshal(input.container_id)
`

func TestState(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, statePolicy)
	create := func(id, image, sandbox string) error {
		r := requests()["CreateContainerRequest"].(*pb.CreateContainerRequest)
		r.ContainerId, r.Storages[0].Source = id, image
		r.OCI.Annotations["io.kubernetes.cri.sandbox-name"] = sandbox
		return e.Check(ctx, "CreateContainer", r)
	}
	exec := func(id string, args ...string) error {
		return e.Check(ctx, "ExecProcess", &pb.ExecProcessRequest{ContainerId: id, ExecId: "e", Process: &pb.Process{Args: args}})
	}
	if err := exec("app", "/bin/ls"); !errors.Is(err, ErrDenied) {
		t.Fatalf("exec before create: %v", err)
	}
	if err := create("app", "registry.example/app:1", "web"); err != nil {
		t.Fatal(err)
	}
	if err := create("db", "registry.example/db:1", "web"); err != nil {
		t.Fatal(err)
	}
	if err := create("evil", "registry.example/app:1", "other-pod"); !errors.Is(err, ErrDenied) {
		t.Fatalf("another sandbox name: %v", err)
	}
	if err := exec("app", "/bin/ls"); err != nil {
		t.Fatalf("exec in app: %v", err)
	}
	if err := exec("db", "/bin/ls"); !errors.Is(err, ErrDenied) {
		t.Fatalf("exec in db: %v", err)
	}
	if err := e.Check(ctx, "RemoveContainer", &pb.RemoveContainerRequest{ContainerId: "app"}); err != nil {
		t.Fatal(err)
	}
	if err := exec("app", "/bin/ls"); !errors.Is(err, ErrDenied) {
		t.Fatalf("exec after remove: %v", err)
	}
	// As in Kata, removing what the state does not hold fails the patch.
	if err := e.Check(ctx, "RemoveContainer", &pb.RemoveContainerRequest{ContainerId: "app"}); !errors.Is(err, ErrDenied) || !errors.Is(err, errPatch) {
		t.Fatalf("second remove: %v", err)
	}
	// A new policy starts with an empty state.
	if err := e.Set(ctx, statePolicy); err != nil {
		t.Fatal(err)
	}
	if err := create("evil", "registry.example/app:1", "other-pod"); err != nil {
		t.Fatalf("fresh state: %v", err)
	}
}

func TestStateOps(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, statePolicy)
	apply := func(ops string) error {
		return e.Check(ctx, "PauseContainer", &pb.PauseContainerRequest{ContainerId: ops})
	}
	for _, ok := range []string{
		`[{"op": "add", "path": "/pstate/a", "value": {"b": [1]}}]`,
		`[{"op": "add", "path": "/pstate/a/b/-", "value": 2}, {"op": "test", "path": "/pstate/a/b", "value": [1, 2]}]`,
		`[{"op": "replace", "path": "/pstate/a/b/0", "value": 0}, {"op": "copy", "from": "/pstate/a", "path": "/pstate/c"}]`,
		`[{"op": "move", "from": "/pstate/c", "path": "/pstate/d~1e~0"}, {"op": "test", "path": "/pstate/d~1e~0/b", "value": [0, 2]}]`,
		`[{"op": "remove", "path": "/pstate/a"}]`,
		`[]`,
	} {
		if err := apply(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		`[{"op": "add", "path": "/agent_policy/x", "value": 1}]`,
		`[{"op": "add", "path": "pstate/x", "value": 1}]`,
		`[{"op": "add", "path": "/pstate/x"}]`,
		`[{"op": "frobnicate", "path": "/pstate/x"}]`,
		`[{"op": "remove", "path": "/pstate/a"}]`,
		`[{"op": "test", "path": "/pstate/d/e~", "value": 1}]`,
		`[{"op": "copy", "from": 1, "path": "/pstate/x"}]`,
		`[1]`,
		// All or nothing: the first op is undone with the failing second.
		`[{"op": "add", "path": "/pstate/z", "value": 1}, {"op": "test", "path": "/pstate/z", "value": 2}]`,
	} {
		if err := apply(bad); !errors.Is(err, errPatch) || !strings.Contains(err.Error(), "PauseContainerRequest") {
			t.Errorf("%s: %v, want a patch error", bad, err)
		}
	}
	// The state after all that: d~1e~0 (i.e. "d/e~") only.
	if err := apply(`[{"op": "test", "path": "/pstate", "value": {"d/e~": {"b": [0, 2]}}}]`); err != nil {
		t.Errorf("final state: %v", err)
	}
}
