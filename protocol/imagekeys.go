package protocol

// KeyPacket is the JSON behind an encrypted image layer's annotation
// org.opencontainers.image.enc.keys.provider.attestation-agent (standard
// base64 of it): the layer's private options wrapped with a KBS key.
// coco-keyprovider writes version 1 (no version, no provider); readers take
// a missing version as "0.1.0" and a missing provider as "kbs", which is
// what guest-components' version 2 packets spell out.
type KeyPacket struct {
	Version     string `json:"version,omitempty"`
	Kid         string `json:"kid"`
	WrappedData string `json:"wrapped_data"`
	Provider    string `json:"provider,omitempty"`
	IV          string `json:"iv"`
	WrapType    string `json:"wrap_type"`
}
