package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmp is a connection to QEMU's machine protocol (QMP): JSON commands, one
// answer each, with asynchronous events in between, which are skipped.
type qmp struct {
	conn net.Conn
	dec  *json.Decoder
}

// ErrQMP is wrapped by QEMU's answers of class error.
var ErrQMP = errors.New("qmp")

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// dialQMP connects to the QMP socket and leaves its capabilities
// negotiation mode.
func dialQMP(ctx context.Context, socket string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQMP, err)
	}
	q := &qmp{conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var greeting qmpMessage
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("%w: no greeting: %v", ErrQMP, err)
	}
	if err := q.run(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) Close() error { return q.conn.Close() }

// run executes a command with its arguments and decodes its answer into
// out (if not nil).
func (q *qmp) run(ctx context.Context, command string, args, out any) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(30 * time.Second)
	}
	q.conn.SetDeadline(dl)
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := q.conn.Write(b); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrQMP, command, err)
	}
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrQMP, command, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return fmt.Errorf("%w: %s: %s: %s", ErrQMP, command, m.Error.Class, m.Error.Desc)
		case m.Return == nil:
			return fmt.Errorf("%w: %s: an answer without return", ErrQMP, command)
		case out != nil:
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrQMP, command, err)
			}
		}
		return nil
	}
}
