package snp

import "encoding/binary"

// VMSASize is the size of a VMSA page.
const VMSASize = 4096

// bspEIP is where the boot processor starts: the x86 reset vector.
const bspEIP = 0xfffffff0

// Offsets in the VMSA (AMD APM vol. 2, table B-4, "VMSA layout, state
// save area for SEV-ES"; Linux's struct sev_es_save_area).
const (
	vmsaES          = 0x000 // segments: es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr, 16 bytes each
	vmsaEFER        = 0x0d0
	vmsaCR4         = 0x148
	vmsaCR0         = 0x158
	vmsaDR7         = 0x160
	vmsaDR6         = 0x168
	vmsaRFLAGS      = 0x170
	vmsaRIP         = 0x178
	vmsaGPAT        = 0x268
	vmsaRDX         = 0x310
	vmsaSEVFeatures = 0x3b0
	vmsaXCR0        = 0x3e8
	vmsaMXCSR       = 0x408
	vmsaX87FCW      = 0x410
)

// segment is a VMCB segment register: selector, attributes, limit, base.
type segment struct {
	selector, attrib uint16
	limit            uint32
	base             uint64
}

// The segment registers in VMSA order.
const (
	segES = iota
	segCS
	segSS
	segDS
	segFS
	segGS
	segGDTR
	segLDTR
	segIDTR
	segTR
)

// qemuVMSA is the register state QEMU and KVM give an SNP vCPU that starts
// at eip, as LAUNCH_UPDATE_VMSA measures it: the architectural reset state
// in real mode with CS based so that CS:IP is eip, plus what KVM sets
// (EFER.SVME, CR4.MCE), the PAT reset value, the CPU signature in RDX as
// after RESET, the guest's SEV features, and QEMU's x87/SSE reset state.
func qemuVMSA(eip, cpuSig uint32, features uint64) *[VMSASize]byte {
	var p [VMSASize]byte
	segs := [...]segment{
		segES:   {0, 0x93, 0xffff, 0},
		segCS:   {0xf000, 0x9b, 0xffff, uint64(eip & 0xffff0000)},
		segSS:   {0, 0x93, 0xffff, 0},
		segDS:   {0, 0x93, 0xffff, 0},
		segFS:   {0, 0x93, 0xffff, 0},
		segGS:   {0, 0x93, 0xffff, 0},
		segGDTR: {0, 0, 0xffff, 0},
		segLDTR: {0, 0x82, 0xffff, 0},
		segIDTR: {0, 0, 0xffff, 0},
		segTR:   {0, 0x8b, 0xffff, 0},
	}
	le := binary.LittleEndian
	for i, s := range segs {
		b := p[vmsaES+16*i:]
		le.PutUint16(b, s.selector)
		le.PutUint16(b[2:], s.attrib)
		le.PutUint32(b[4:], s.limit)
		le.PutUint64(b[8:], s.base)
	}
	le.PutUint64(p[vmsaEFER:], 0x1000) // EFER.SVME
	le.PutUint64(p[vmsaCR4:], 0x40)    // CR4.MCE
	le.PutUint64(p[vmsaCR0:], 0x10)    // CR0.ET
	le.PutUint64(p[vmsaDR7:], 0x400)
	le.PutUint64(p[vmsaDR6:], 0xffff0ff0)
	le.PutUint64(p[vmsaRFLAGS:], 0x2)
	le.PutUint64(p[vmsaRIP:], uint64(eip&0xffff))
	le.PutUint64(p[vmsaGPAT:], 0x0007040600070406)
	le.PutUint64(p[vmsaRDX:], uint64(cpuSig))
	le.PutUint64(p[vmsaSEVFeatures:], features)
	le.PutUint64(p[vmsaXCR0:], 0x1)
	le.PutUint32(p[vmsaMXCSR:], 0x1f80)
	le.PutUint16(p[vmsaX87FCW:], 0x37f)
	return &p
}
