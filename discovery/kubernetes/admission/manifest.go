package admission

import (
	"bytes"
	_ "embed"
)

//go:embed webhook.yaml
var webhookYAML []byte

// WebhookConfiguration returns webhook.yaml: the ValidatingWebhookConfiguration
// named DefaultConfigName that sends CREATE and UPDATE of the four policy
// kinds, at every version, to meshd's Service (minimesh-system/meshd, port
// 15017, Path), with failurePolicy Ignore and no caBundle (CABundle fills
// it in).
func WebhookConfiguration() []byte { return bytes.Clone(webhookYAML) }
