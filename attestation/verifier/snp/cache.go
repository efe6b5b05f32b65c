package snp

// maxCached bounds each cache. A fleet has a VCEK per chip and TCB, so the
// bound is generous; it only stops evidence with ever new certificates from
// growing memory without limit.
const maxCached = 4096
