package policy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Kata's policy state: a rule may answer {"allowed": true, "ops": [...]},
// a JSON patch (RFC 6902) that the agent applies to the policy's data once
// the request is allowed; genpolicy's rules remember in data.pstate which
// sandbox, namespace and policy container each container id was created
// as, and check later requests against it. The state starts empty with
// every policy.

// stateRoot is the data document the ops may change.
const stateRoot = "pstate"

var errPatch = errors.New("invalid policy state patch")

func newState() storage.Store {
	return inmem.NewFromObject(map[string]any{stateRoot: map[string]any{}})
}

// patch applies ops all or nothing.
func patch(ctx context.Context, s storage.Store, ops []any) error {
	txn, err := s.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return err
	}
	for i, op := range ops {
		if err := applyOp(ctx, s, txn, op); err != nil {
			s.Abort(ctx, txn)
			return fmt.Errorf("%w: op %d: %v", errPatch, i, err)
		}
	}
	return s.Commit(ctx, txn)
}

func applyOp(ctx context.Context, s storage.Store, txn storage.Transaction, raw any) error {
	op, ok := raw.(map[string]any)
	if !ok {
		return fmt.Errorf("not an object: %v", raw)
	}
	path, err := pointer(op["path"])
	if err != nil {
		return err
	}
	value, hasValue := op["value"]
	switch op["op"] {
	case "add", "replace", "test":
		if !hasValue {
			return fmt.Errorf("%v without a value", op["op"])
		}
	}
	switch op["op"] {
	case "add":
		return s.Write(ctx, txn, storage.AddOp, path, value)
	case "replace":
		return s.Write(ctx, txn, storage.ReplaceOp, path, value)
	case "remove":
		return s.Write(ctx, txn, storage.RemoveOp, path, nil)
	case "test":
		got, err := s.Read(ctx, txn, path)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, value) {
			return fmt.Errorf("test %v failed", op["path"])
		}
		return nil
	case "copy", "move":
		from, err := pointer(op["from"])
		if err != nil {
			return err
		}
		v, err := s.Read(ctx, txn, from)
		if err != nil {
			return err
		}
		if op["op"] == "move" {
			if err := s.Write(ctx, txn, storage.RemoveOp, from, nil); err != nil {
				return err
			}
		}
		return s.Write(ctx, txn, storage.AddOp, path, v)
	}
	return fmt.Errorf("unknown op %v", op["op"])
}

// pointer parses a JSON pointer (RFC 6901) into a path under data.pstate.
func pointer(v any) (storage.Path, error) {
	s, ok := v.(string)
	if !ok || !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("path %v is not a JSON pointer", v)
	}
	path := strings.Split(s[1:], "/")
	for i, p := range path {
		path[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	if path[0] != stateRoot {
		return nil, fmt.Errorf("path %s is outside /%s", s, stateRoot)
	}
	return path, nil
}
