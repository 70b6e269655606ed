package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/xds"
)

// DebugJSON fetches one of meshd's debug endpoints (e.g. "/debug/syncz")
// and decodes its JSON body into v.
func (m *Mesh) DebugJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.MonitoringURL()+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking meshd for %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading meshd's %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("meshd answered %s for %s: %s", resp.Status, path, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("meshd's %s is not the expected JSON: %w", path, err)
	}
	return nil
}

// SyncStatus is meshd's /debug/syncz.
func (m *Mesh) SyncStatus(ctx context.Context) (xds.SyncStatus, error) {
	var s xds.SyncStatus
	err := m.DebugJSON(ctx, "/debug/syncz", &s)
	return s, err
}

// ModelProblems are the problems of meshd's current model (/debug/model):
// the objects and files it skipped or accepted with warnings.
func (m *Mesh) ModelProblems(ctx context.Context) (policy.Problems, error) {
	var snap struct {
		Problems policy.Problems `json:"problems"`
	}
	err := m.DebugJSON(ctx, "/debug/model", &snap)
	return snap.Problems, err
}
