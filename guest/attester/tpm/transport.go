package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultTPM is the kernel's TPM resource manager, which lets the attester
// share the TPM with other users (tpm2-tools, the kernel's IMA).
const DefaultTPM = "/dev/tpmrm0"

// commandTimeout bounds one command on a socket, so a wedged simulator fails
// the request instead of hanging it; key generation is the slowest command.
const commandTimeout = time.Minute

// openTPM opens a TPM device path, or a simulator's raw command socket named
// "tcp://host:port" or "unix:///path".
func openTPM(name string) (transport.TPMCloser, error) {
	for _, network := range []string{"tcp", "unix"} {
		if addr, ok := strings.CutPrefix(name, network+"://"); ok {
			conn, err := net.DialTimeout(network, addr, commandTimeout)
			if err != nil {
				return nil, err
			}
			return &streamTPM{conn: conn}, nil
		}
	}
	return linuxtpm.Open(name)
}

// streamTPM speaks the raw TPM command protocol over a stream socket, as
// swtpm's --server does. go-tpm's tcp transport speaks the Microsoft
// simulator's framing instead, and its device transport assumes one read
// returns a whole response, which a socket does not promise.
type streamTPM struct {
	conn net.Conn
}

// headerSize is the size of a TPM response header: tag, size, return code.
const headerSize = 10

// maxResponse bounds the size field a peer can make us allocate.
const maxResponse = 1 << 16

// Warnings after which the TPM expects the command again (TCG Part 2,
// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING); swtpm answers RETRY to
// the first command after a key generation.
var retryCodes = map[uint32]bool{0x922: true, 0x908: true, 0x90a: true}

// Send sends a command, resending it with backoff while the TPM asks to.
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	delay := time.Millisecond
	for {
		rsp, err := s.roundTrip(cmd)
		if err != nil || !retryCodes[binary.BigEndian.Uint32(rsp[6:10])] || delay > time.Second {
			return rsp, err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

func (s *streamTPM) roundTrip(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("tpm response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[headerSize:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

func (s *streamTPM) Close() error {
	return s.conn.Close()
}
