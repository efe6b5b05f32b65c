package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TerminationMessageMax is the most of a termination message the host
// gets: the kubelet reads the last 4096 bytes of its file.
const TerminationMessageMax = 4096

// A container's termination-message file (Kubernetes'
// terminationMessagePath) is a file the host copied in: the container
// writes the guest's copy, which the kubelet never sees. When the host names
// it in WaitProcess, the agent reads its end as the process exits and hands
// it back, if the policy's TerminationMessageRequest rule lets it leave the
// guest; otherwise it only says that a message was withheld.

// terminationMessage fills w with container c's termination message, the
// file mounted at dest.
func (a *Agent) terminationMessage(ctx context.Context, c *container, dest string, w *pb.WaitProcessResponse) {
	msg, err := readTerminationMessage(a.cfg.SharedDir, c.mounts, dest)
	if err != nil {
		a.log.Warn("no termination message", "container", c.id, "path", dest, "err", err)
		return
	}
	if len(msg) == 0 {
		return
	}
	req := &pb.TerminationMessageRequest{ContainerId: c.id, Path: dest, Len: uint32(len(msg))}
	if err := a.cfg.Policy.Check(ctx, "WaitProcess", req); err != nil {
		a.log.Info("termination message withheld from the host", "container", c.id, "reason", err)
		w.TerminationMessageWithheld = true
		return
	}
	w.TerminationMessage = msg
}

// readTerminationMessage reads the end of the copied file that mounts
// (a container's, sources in the guest) bind at dest: only a file the host
// copied in, never the container's own files or a pod's storage.
func readTerminationMessage(sharedDir string, mounts []specs.Mount, dest string) ([]byte, error) {
	dest = path.Clean(dest)
	for _, m := range mounts {
		if !isBind(m) || path.Clean(m.Destination) != dest {
			continue
		}
		rel, ok := sandboxName(m.Source, sharedDir)
		if !ok {
			return nil, fmt.Errorf("%w: %s is not a file the host copied in", ErrInvalidArgument, dest)
		}
		return tail(sharedDir, rel, TerminationMessageMax)
	}
	return nil, fmt.Errorf("%w: nothing is mounted at %s", ErrNotFound, dest)
}

// tail reads the last n bytes of regular file rel under root.
func tail(root, rel string, n int64) ([]byte, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if st, err := r.Lstat(rel); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidArgument, rel)
	}
	f, err := r.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(max(0, st.Size()-n), io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, n))
}
