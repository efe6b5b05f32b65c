package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// nvChunk is what one NV command moves; TPMs accept at least 512 bytes
// (MAX_NV_BUFFER_SIZE is 1024 on most).
const nvChunk = 512

// ownerAuth authorizes NV commands as the owner, with the empty password
// guest TPMs (and Azure's vTPM) keep.
var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// ReadNV reads a whole NV index: Azure's vTPM keeps the HCL report in one.
func (a *Attester) ReadNV(index uint32) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return readNV(a.tpm, index)
}

// ReadNVIndex reads a whole NV index of the TPM at path (Options.TPM)
// without loading an AK, to probe what the platform keeps there.
func ReadNVIndex(path string, index uint32) ([]byte, error) {
	if path == "" {
		path = DefaultTPM
	}
	t, err := openTPM(path)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return readNV(t, index)
}

func readNV(t transport.TPM, index uint32) ([]byte, error) {
	h, size, err := nvPublic(t, index)
	if err != nil {
		return nil, fmt.Errorf("tpm: NV index %#x: %w", index, err)
	}
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(nvChunk, size-len(out))
		rsp, err := tpm2.NVRead{AuthHandle: ownerAuth, NVIndex: h, Size: uint16(n), Offset: uint16(len(out))}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: read NV index %#x: %w", index, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// WriteNV writes data as the whole content of an NV index, defining it
// (owner read and write) or redefining it when its size differs.
func (a *Attester) WriteNV(index uint32, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(data) == 0 || len(data) > 0xffff {
		return fmt.Errorf("tpm: NV index %#x: %d bytes", index, len(data))
	}
	h, size, err := nvPublic(a.tpm, index)
	switch {
	case errors.Is(err, tpm2.TPMRCHandle):
		h, err = a.defineNV(index, len(data))
	case err == nil && size != len(data):
		if _, err = (tpm2.NVUndefineSpace{AuthHandle: ownerAuth, NVIndex: h}).Execute(a.tpm); err == nil {
			h, err = a.defineNV(index, len(data))
		}
	}
	if err != nil {
		return fmt.Errorf("tpm: NV index %#x: %w", index, err)
	}
	for off := 0; off < len(data); off += nvChunk {
		chunk := data[off:min(off+nvChunk, len(data))]
		if _, err := (tpm2.NVWrite{AuthHandle: ownerAuth, NVIndex: h, Data: tpm2.TPM2BMaxNVBuffer{Buffer: chunk}, Offset: uint16(off)}).Execute(a.tpm); err != nil {
			return fmt.Errorf("tpm: write NV index %#x: %w", index, err)
		}
	}
	return nil
}

func nvPublic(t transport.TPM, index uint32) (tpm2.NamedHandle, int, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(t)
	if err != nil {
		return tpm2.NamedHandle{}, 0, err
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return tpm2.NamedHandle{}, 0, err
	}
	return tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rsp.NVName}, int(pub.DataSize), nil
}

func (a *Attester) defineNV(index uint32, size int) (tpm2.NamedHandle, error) {
	_, err := tpm2.NVDefineSpace{AuthHandle: ownerAuth, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex:    tpm2.TPMHandle(index),
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NoDA: true},
		DataSize:   uint16(size),
	})}.Execute(a.tpm)
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	h, _, err := nvPublic(a.tpm, index)
	return h, err
}
