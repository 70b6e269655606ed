package xds

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// What one stream may make meshd hold.
//
// A client decides how much it sends, so every piece of state meshd keeps
// for a stream has a bound, and a client that asks for more is refused
// with RESOURCE_EXHAUSTED rather than served:
//
//   - a request is at most maxRequestSize encoded (gRPC refuses larger
//     ones) and carries at most maxStreamNames resource names, and at most
//     as many entries in each of its other repeated fields
//     (unsubscriptions, initial versions);
//   - per type, a stream subscribes to at most maxStreamNames names of at
//     most maxRequestSize bytes in all: a state-of-the-world request
//     replaces the last one, and a delta stream's subscriptions add up;
//   - requests read ahead of go-control-plane (see readAhead) are at most
//     readAheadCount requests and readAheadBytes; past that meshd stops
//     reading the stream until go-control-plane has taken some;
//   - only the types meshd serves (typeURLOf), and per type a bounded
//     history (maxSentTracked nonces, as many NACKed versions).
//
// State shared by streams (endpoint name lists, held sets, a group's
// configuration) counts once however many streams share it, and goes
// with the last stream that holds it (see anchor).
const (
	// maxStreamNames is 2^17: a sidecar that subscribes to every
	// cluster of a 100,000-service mesh fits.
	maxStreamNames = 1 << 17
	readAheadCount = 16
	readAheadBytes = 16 << 20
)

// tooManyNames is what the codec shows instead of the names of a request
// that carries more than maxStreamNames of them (or as many entries in
// another field); onRequest refuses the stream on seeing it. It starts
// with reservedPrefix, as no resource name does.
const tooManyNames = reservedPrefix + "too-many-names"

// errTooManyNames ends a stream whose request carries too many names.
var errTooManyNames = status.Errorf(codes.ResourceExhausted,
	"minimesh refused the request: it names more than %d resources (or carries as many unsubscriptions or initial versions); a stream may subscribe to at most %d of one type",
	maxStreamNames, maxStreamNames)

// carriesTooMany reports whether the codec found req too large to decode.
func (r request) carriesTooMany() bool {
	var names []string
	if r.sotw != nil {
		names = r.sotw.GetResourceNames()
	} else {
		names = r.delta.GetResourceNamesSubscribe()
	}
	return len(names) == 1 && names[0] == tooManyNames
}

// checkSubscribed refuses a subscription of more names, or more bytes of
// names, than one stream may hold of one type.
func checkSubscribed(typeURL string, set map[string]struct{}) error {
	if len(set) > maxStreamNames {
		return subscribedTooMuch(typeURL, fmt.Sprintf("%d names", len(set)))
	}
	bytes := 0
	for n := range set {
		bytes += len(n)
	}
	if bytes > maxRequestSize {
		return subscribedTooMuch(typeURL, fmt.Sprintf("names of %d bytes in all", bytes))
	}
	return nil
}

func subscribedTooMuch(typeURL, what string) error {
	return status.Errorf(codes.ResourceExhausted,
		"minimesh refused the subscription: this stream subscribes to %s of type %s; one stream may subscribe to at most %d names of one type, of at most %d bytes in all",
		what, shortType(typeURL), maxStreamNames, maxRequestSize)
}

// changesSubscription reports whether a delta request subscribes or
// unsubscribes: only such a request can make a stream's set grow.
func changesSubscription(req *discoveryv3.DeltaDiscoveryRequest) bool {
	return len(req.GetResourceNamesSubscribe()) > 0 || len(req.GetResourceNamesUnsubscribe()) > 0
}

// limitedCache checks the size of every delta subscription before its
// watch is made. Endpoint subscriptions are checked by the endpoint cache
// itself, which alone can read a stand-in's names (see deltaSubscribed).
type limitedCache struct {
	cachev3.Cache
}

// CreateDeltaWatch implements cachev3.ConfigWatcher.
func (c limitedCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	if req.GetTypeUrl() != resourcev3.EndpointType && changesSubscription(req) {
		if err := checkSubscribed(req.GetTypeUrl(), sub.SubscribedResources()); err != nil {
			return nil, err
		}
	}
	return c.Cache.CreateDeltaWatch(req, sub, out)
}

// requestWeight is roughly what a request read ahead costs meshd: its
// decoded size, and that of the endpoint list its stand-in names, which
// may be new.
func (l *nameLists) requestWeight(m proto.Message, names []string) int {
	w := proto.Size(m)
	switch len(names) {
	case 1: // a delta stand-in
		if list := l.tokens.lookup(names[0]); list != nil {
			w += list.bytes
		}
	case 2: // a state-of-the-world stand-in
		if list := l.tokens.lookup(names[1]); names[0] == "*" && list != nil {
			w += list.bytes
		}
	}
	return w
}
