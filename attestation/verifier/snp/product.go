package snp

import (
	"fmt"
	"strings"
)

// Product is an AMD EPYC generation with SEV-SNP. It selects AMD's root
// certificates, the KDS path and the layout of TCB_VERSION.
type Product int

// Products known to the verifier.
const (
	ProductUnknown Product = iota
	Milan
	Genoa
	Turin
)

var productNames = [...]string{"", "Milan", "Genoa", "Turin"}

// String returns the KDS spelling ("Milan", ...), or "" when unknown.
func (p Product) String() string {
	if p < 0 || int(p) >= len(productNames) {
		return ""
	}
	return productNames[p]
}

// ParseProduct reads a product name, case-insensitively as Trustee does.
func ParseProduct(s string) (Product, error) {
	for i, name := range productNames {
		if name != "" && strings.EqualFold(s, name) {
			return Product(i), nil
		}
	}
	return ProductUnknown, fmt.Errorf("%w: %q", ErrUnknownProduct, s)
}

// productFromCPUID maps the family and model a report (version 3 and later)
// carries to a product, with the ranges AMD's sev crate uses, so that
// Trustee and Cocoon accept the same machines (Bergamo and Siena are Genoa).
func productFromCPUID(family, model byte) Product {
	switch {
	case family == 0x19 && model <= 0x0f:
		return Milan
	case family == 0x19 && (model >= 0x10 && model <= 0x1f || model >= 0xa0 && model <= 0xaf):
		return Genoa
	case family == 0x1a && model <= 0x11:
		return Turin
	}
	return ProductUnknown
}

// TCB is a decoded TCB_VERSION. FMC exists on Turin only.
type TCB struct {
	FMC        uint8
	Bootloader uint8
	TEE        uint8
	SNP        uint8
	Microcode  uint8
}

// decodeTCB reads a TCB_VERSION. Turin moved the fields: its layout is
// FMC, bootloader, TEE, SNP, 3 reserved, microcode; older chips have
// bootloader, TEE, 4 reserved, SNP, microcode.
func decodeTCB(v uint64, turin bool) TCB {
	b := func(i int) uint8 { return uint8(v >> (8 * i)) }
	if turin {
		return TCB{FMC: b(0), Bootloader: b(1), TEE: b(2), SNP: b(3), Microcode: b(7)}
	}
	return TCB{Bootloader: b(0), TEE: b(1), SNP: b(6), Microcode: b(7)}
}

// encode is the inverse of decodeTCB.
func (t TCB) encode(turin bool) uint64 {
	at := func(x uint8, i int) uint64 { return uint64(x) << (8 * i) }
	if turin {
		return at(t.FMC, 0) | at(t.Bootloader, 1) | at(t.TEE, 2) | at(t.SNP, 3) | at(t.Microcode, 7)
	}
	return at(t.Bootloader, 0) | at(t.TEE, 1) | at(t.SNP, 6) | at(t.Microcode, 7)
}

// storeName is the file name prefix Trustee's offline KDS store uses for a
// VCEK of this TCB, e.g. "bl03_tee00_snp08_ucode115".
func (t TCB) storeName(turin bool) string {
	s := fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if turin {
		s += fmt.Sprintf("_fmc%02d", t.FMC)
	}
	return s
}
