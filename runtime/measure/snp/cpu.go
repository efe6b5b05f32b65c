package snp

import (
	"fmt"
	"sort"
	"strings"
)

// CPUSignature is the CPUID Fn0000_0001_EAX value of a family, model and
// stepping (AMD CPUID specification #25481): families above 0xf put 0xf in
// the base field and the rest in the extended one.
func CPUSignature(family, model, stepping uint32) uint32 {
	famLow, famHigh := family, uint32(0)
	if family > 0xf {
		famLow, famHigh = 0xf, (family-0xf)&0xff
	}
	return famHigh<<20 | (model>>4&0xf)<<16 | famLow<<8 | (model&0xf)<<4 | stepping&0xf
}

// cpuModel is a QEMU CPU model's family, model and stepping.
type cpuModel struct{ family, model, stepping uint32 }

// cpuModels are the AMD models of QEMU's builtin_x86_defs an SNP guest
// can be given with -cpu; versions of one model share its signature.
var cpuModels = map[string]cpuModel{
	"EPYC": {23, 1, 2}, "EPYC-v1": {23, 1, 2}, "EPYC-v2": {23, 1, 2}, "EPYC-IBPB": {23, 1, 2},
	"EPYC-v3": {23, 1, 2}, "EPYC-v4": {23, 1, 2},
	"EPYC-Rome": {23, 49, 0}, "EPYC-Rome-v1": {23, 49, 0}, "EPYC-Rome-v2": {23, 49, 0},
	"EPYC-Rome-v3": {23, 49, 0}, "EPYC-Rome-v4": {23, 49, 0},
	"EPYC-Milan": {25, 1, 1}, "EPYC-Milan-v1": {25, 1, 1}, "EPYC-Milan-v2": {25, 1, 1},
	"EPYC-Genoa": {25, 17, 0}, "EPYC-Genoa-v1": {25, 17, 0},
	"EPYC-Turin": {26, 0, 0}, "EPYC-Turin-v1": {26, 0, 0},
}

// CPUTypeSignature is the signature of a QEMU CPU model name.
func CPUTypeSignature(name string) (uint32, error) {
	m, ok := cpuModels[name]
	if !ok {
		return 0, fmt.Errorf("%w: %q (known: %s)", ErrUnknownCPUType, name, strings.Join(CPUTypes(), ", "))
	}
	return CPUSignature(m.family, m.model, m.stepping), nil
}

// CPUTypes are the known QEMU CPU model names, sorted.
func CPUTypes() []string {
	names := make([]string, 0, len(cpuModels))
	for n := range cpuModels {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
