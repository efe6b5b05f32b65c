package ovmf

// Footer table layout, for the external tests that corrupt it.
const (
	FooterOffset    = footerOffset
	EntryHeaderSize = entryHeaderSize
)
