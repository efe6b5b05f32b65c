package shim

import (
	"os"
	"syscall"

	"github.com/cocoon-cc/cocoon/agent"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// A container writes its termination message (terminationMessagePath) into
// the guest's copy of the kubelet's file; the kubelet reads the host's.
// WaitProcess names the file's path in the container, and the agent answers
// with the message when the agent policy lets it out
// (TerminationMessageRequest), which the shim writes into the host's file
// before it reports the exit.

// WithheldTerminationMessage is the termination message the kubelet reports
// when the agent policy keeps a container's own message in the guest.
const WithheldTerminationMessage = "cocoon: termination message withheld by the pod's agent policy (TerminationMessageRequest denied)"

// terminationLogOf is the copy standing for the kubelet's
// termination-message file among a container's copies, or nil.
func terminationLogOf(copies []*copied) *copied {
	for _, c := range copies {
		if terminationLog.MatchString(c.host) {
			return c
		}
	}
	return nil
}

// terminationPath is the path WaitProcess names for c, none for nil.
func (c *copied) terminationPath() string {
	if c == nil {
		return ""
	}
	return c.dest
}

// deliverTermination writes the termination message the agent answered
// with into the host's file (nothing for nil or no message), at most what
// the kubelet reads.
func (c *copied) deliverTermination(w *pb.WaitProcessResponse) error {
	msg := w.GetTerminationMessage()
	if w.GetTerminationMessageWithheld() {
		msg = []byte(WithheldTerminationMessage)
	}
	if c == nil || len(msg) == 0 {
		return nil
	}
	msg = msg[max(0, len(msg)-agent.TerminationMessageMax):]
	f, err := os.OpenFile(c.host, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(msg); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
