package translate

import (
	"testing"

	"github.com/minimesh/minimesh/discovery/model"
)

// Keys fetched into the snapshot win over Options; either alone is used.
func TestKeySets(t *testing.T) {
	snap := &model.Snapshot{JWKS: map[string]string{"https://a/jwks": "fetched"}}
	opts := Options{JWKS: map[string]string{"https://a/jwks": "option", "https://b/jwks": "b"}}
	got := keySets(snap, opts)
	if got["https://a/jwks"] != "fetched" || got["https://b/jwks"] != "b" {
		t.Errorf("keySets = %v, want the snapshot's key for a and the option's for b", got)
	}
	if got := keySets(&model.Snapshot{}, opts); got["https://a/jwks"] != "option" {
		t.Errorf("without fetched keys, keySets = %v, want Options.JWKS", got)
	}
}
