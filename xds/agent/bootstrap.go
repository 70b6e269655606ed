package agent

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"
)

// bootstrap mirrors the parts of gRPC's xDS bootstrap file the agent
// writes (gRFC A27, A29 for certificate providers, A36 for the server
// listener template).
type bootstrap struct {
	XDSServers                         []xdsServer                    `json:"xds_servers"`
	Node                               bootstrapNode                  `json:"node"`
	CertificateProviders               map[string]certificateProvider `json:"certificate_providers"`
	ServerListenerResourceNameTemplate string                         `json:"server_listener_resource_name_template"`
}

type xdsServer struct {
	ServerURI      string         `json:"server_uri"`
	ChannelCreds   []channelCreds `json:"channel_creds"`
	ServerFeatures []string       `json:"server_features"`
}

// bootstrapNode is the node of gRFC A27: the fields of Envoy's Node a
// bootstrap may carry. Every one is always written, locality included with
// empty strings when the agent does not know it: at least one widely used
// gRPC implementation refuses a bootstrap whose node has no locality
// ("locality field missing in node element"), and an empty locality means
// the same as none to the others. build_version, user_agent_name,
// user_agent_version and client_features are left out, as A27 asks: the
// gRPC library fills them in itself.
type bootstrapNode struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster"`
	Locality bootstrapLocality `json:"locality"`
	Metadata json.RawMessage   `json:"metadata"`
}

type bootstrapLocality struct {
	Region  string `json:"region"`
	Zone    string `json:"zone"`
	SubZone string `json:"sub_zone"`
}

type channelCreds struct {
	Type string `json:"type"`
}

type certificateProvider struct {
	PluginName string            `json:"plugin_name"`
	Config     fileWatcherConfig `json:"config"`
}

type fileWatcherConfig struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	RefreshInterval   string `json:"refresh_interval"`
}

// buildBootstrap renders the bootstrap. The xDS server is the agent's own
// endpoint; the channel to it is local, so insecure channel credentials
// carry nothing secret (the agent holds the token, not the workload).
func (a *Agent) buildBootstrap() ([]byte, error) {
	// The metadata is a protobuf Struct; protojson gives its JSON form.
	metadata, err := protojson.Marshal(a.node.GetMetadata())
	if err != nil {
		return nil, fmt.Errorf("rendering the bootstrap node's metadata: %w", err)
	}
	loc := a.node.GetLocality()
	dir := a.opts.CertDir
	b := bootstrap{
		XDSServers: []xdsServer{{
			ServerURI:      a.proxyURI,
			ChannelCreds:   []channelCreds{{Type: "insecure"}},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: bootstrapNode{
			ID:      a.node.GetId(),
			Cluster: a.node.GetCluster(),
			Locality: bootstrapLocality{
				Region: loc.GetRegion(), Zone: loc.GetZone(), SubZone: loc.GetSubZone(),
			},
			Metadata: metadata,
		},
		CertificateProviders: map[string]certificateProvider{
			CertificateProvider: {
				PluginName: "file_watcher",
				Config: fileWatcherConfig{
					CertificateFile:   filepath.Join(dir, CertChainFile),
					PrivateKeyFile:    filepath.Join(dir, KeyFile),
					CACertificateFile: filepath.Join(dir, RootCertFile),
					// A protobuf Duration in JSON: seconds with an "s".
					RefreshInterval: strconv.FormatFloat(a.opts.RefreshInterval.Seconds(), 'f', -1, 64) + "s",
				},
			},
		},
		ServerListenerResourceNameTemplate: ServerListenerTemplate,
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rendering the bootstrap: %w", err)
	}
	return append(out, '\n'), nil
}
