package xds

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// requestCodec is gRPC's protobuf codec, except that it decodes the
// resource names of a state-of-the-world DiscoveryRequest itself.
//
// A sidecar that sees every service sends the name of every cluster in
// each EDS request, and it sends one to ACK every response: at 1,000
// services and 1,000 sidecars an endpoint change brings a million names
// in, which the generic decoder copies into a million new strings, checks
// for UTF-8 and leaves to the garbage collector. Most of those requests
// repeat a list the server has seen before (every replica of a deployment
// subscribes to the same clusters, and an ACK repeats its stream's last
// request), so the codec keeps the lists it has decoded and hands out the
// same slice for the same names: no string is allocated for a known list,
// and the lists held by go-control-plane's watches are shared. An endpoint
// request's names are moreover replaced by a stand-in (see standIn).
//
// The slices it returns are shared and must not be modified; nothing in
// minimesh or go-control-plane writes to a request's names.
type requestCodec struct {
	encoding.CodecV2
	lists *nameLists
}

func newRequestCodec(lists *nameLists) requestCodec {
	return requestCodec{CodecV2: encoding.GetCodecV2(protoenc.Name), lists: lists}
}

// Unmarshal implements encoding.CodecV2.
func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v.(type) {
	case *discoveryv3.DiscoveryRequest, *discoveryv3.DeltaDiscoveryRequest:
	default:
		return c.CodecV2.Unmarshal(data, v)
	}
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	sc.in = slices.Grow(sc.in[:0], data.Len())[:data.Len()]
	data.CopyTo(sc.in)
	if req, ok := v.(*discoveryv3.DiscoveryRequest); ok {
		return c.lists.decode(sc, req)
	}
	return c.lists.decodeDelta(sc, v.(*discoveryv3.DeltaDiscoveryRequest))
}

// The field number of DiscoveryRequest.resource_names (and of
// DeltaDiscoveryRequest.resource_names_subscribe), and its tag as encoders
// write it (one byte: field 3, wire type 2).
const (
	resourceNamesField = 3
	resourceNamesTag   = resourceNamesField<<3 | byte(protowire.BytesType)
)

// maxListedNames and maxListedBytes bound the names nameLists remembers
// to recognise lists, and the bytes they and their encodings take; past
// either, the lists turn over: they are learnt anew. A list stays alive
// as long as a stream still subscribes to its stand-in (see standIn), so a
// turnover ends no stream, and a few clients sending many different lists
// cost decoding time and memory for the lists streams hold, not more.
const (
	maxListedNames = 1 << 20
	maxListedBytes = 32 << 20
)

// nameLists remembers decoded lists. A list is known by its encoding:
// the resource_names fields of a request, as they were on the wire.
type nameLists struct {
	// canonical returns the string the endpoint cache holds for a
	// name, if it holds one, so that a new list holds no copy of a
	// known name either. It must not allocate for unknown names.
	canonical func([]byte) (string, bool)

	// tokens names the lists that have a stand-in: a token is an
	// anchor (see anchor), so a list lives while a stream holds its
	// token.
	tokens *anchors[nameList]

	mu    sync.RWMutex
	lists map[uint64][]*nameList // by maphash of the encoding
	held  int                    // names in lists
	bytes int                    // their encodings, twice (wire and names)
}

type nameList struct {
	wire  string // the resource_names fields as encoded
	names []string
	// For endpoint requests (see standIn): the names as a set, shared
	// by every stream subscribing to them, and what go-control-plane is
	// shown instead of them, whose token is the list's anchor. Made on
	// first use.
	set    map[string]struct{}
	shown  []string
	anchor anchor
}

func newNameLists(canonical func([]byte) (string, bool)) *nameLists {
	return &nameLists{canonical: canonical, lists: map[uint64][]*nameList{},
		tokens: newAnchors("names", func(l *nameList) *anchor { return &l.anchor })}
}

var listSeed = maphash.MakeSeed()

// scratch holds a request as received, and its resource_names fields and
// its other fields as decode separates them.
type scratch struct{ in, names, rest []byte }

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (sc *scratch) release() {
	sc.in, sc.names, sc.rest = sc.in[:0], sc.names[:0], sc.rest[:0]
	scratchPool.Put(sc)
}

// decode unmarshals sc.in into req as proto.Unmarshal does, taking
// resource_names from the remembered lists.
func (l *nameLists) decode(sc *scratch, req *discoveryv3.DiscoveryRequest) error {
	list, err := l.decodeExceptNames(sc, req)
	if list == nil || err != nil {
		return err
	}
	req.ResourceNames = list.names
	if req.GetTypeUrl() == resourcev3.EndpointType && !slices.Contains(list.names, "*") {
		req.ResourceNames = l.standIn(list)
	}
	return nil
}

// decodeDelta unmarshals sc.in into req as proto.Unmarshal does, taking
// resource_names_subscribe from the remembered lists. A delta sidecar
// subscribes to every cluster's assignment in its first endpoint request;
// the list is shown to go-control-plane as a stand-in, a token alone (see
// standIn), so that its server keeps a one-entry set of subscribed names
// per stream instead of a thousand names. The endpoint cache reads the
// list from the token (deltaSubscribed) and gives a stream a set of its
// own only when it subscribes to more or unsubscribes.
func (l *nameLists) decodeDelta(sc *scratch, req *discoveryv3.DeltaDiscoveryRequest) error {
	list, err := l.decodeExceptNames(sc, req)
	if list == nil || err != nil {
		return err
	}
	req.ResourceNamesSubscribe = list.names
	if req.GetTypeUrl() == resourcev3.EndpointType && !slices.Contains(list.names, "*") {
		req.ResourceNamesSubscribe = l.standIn(list)[1:]
	}
	return nil
}

// decodeExceptNames unmarshals the fields of sc.in other than field 3
// into m and returns the list field 3 holds, or nil when it holds none.
func (l *nameLists) decodeExceptNames(sc *scratch, m proto.Message) (*nameList, error) {
	names, err := sc.split()
	var list *nameList
	if err == nil && len(names) > 0 {
		list, err = l.list(names)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding a %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return list, proto.Unmarshal(sc.rest, m)
}

// split separates sc.in into its resource-name fields (field 3), which it
// returns, and its other fields, which it appends to sc.rest.
func (sc *scratch) split() ([]byte, error) {
	// Encoders write the names one after the other, so they are usually
	// one run of fields in sc.in, used where it is; only names in
	// several runs are gathered into sc.names.
	var names []byte
	runs := 0
	for b := sc.in; len(b) > 0; {
		var n int
		if b[0] == resourceNamesTag {
			// A run of names, read without the general field
			// decoding: a request may hold thousands.
			for n < len(b) && b[n] == resourceNamesTag {
				_, m := protowire.ConsumeBytes(b[n+1:])
				if m < 0 {
					return nil, protowire.ParseError(m)
				}
				n += 1 + m
			}
		} else {
			num, typ, t := protowire.ConsumeTag(b)
			if t < 0 {
				return nil, protowire.ParseError(t)
			}
			m := protowire.ConsumeFieldValue(num, typ, b[t:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			n = t + m
			if num != resourceNamesField || typ != protowire.BytesType {
				sc.rest = append(sc.rest, b[:n]...)
				b = b[n:]
				continue
			}
			// The names field with a tag in an unusual (longer) form.
		}
		switch runs++; runs {
		case 1:
			names = b[:n]
		case 2:
			sc.names = append(append(sc.names, names...), b[:n]...)
			names = sc.names
		default:
			sc.names = append(sc.names, b[:n]...)
			names = sc.names
		}
		b = b[n:]
	}
	return names, nil
}

// standIn returns what go-control-plane is shown instead of the names of
// a state-of-the-world endpoint request: an explicit wildcard and a token
// naming the list.
//
// go-control-plane's SOTW server builds a new set of a request's names for
// every request (Subscription.SetResourceSubscription): a thousand names
// in every ACK of every sidecar that sees every service, so at 1,000
// services and 1,000 sidecars 54 MB of live sets, 44 MB of garbage and a
// sixth of meshd's CPU per endpoint change. Shown the stand-in, it keeps a
// one-entry set and still does everything else (nonces, ACKs and NACKs,
// watches, response order); the endpoint cache reads the real names and
// their set, one per distinct list, from the token (subscription). Only
// the endpoint cache is asked for endpoints, so nothing else sees the
// stand-in; lists naming "*" themselves are passed on as they are.
func (l *nameLists) standIn(list *nameList) []string {
	l.mu.RLock()
	shown := list.shown
	l.mu.RUnlock()
	if shown != nil {
		return shown
	}
	set := make(map[string]struct{}, len(list.names))
	for _, n := range list.names {
		set[n] = struct{}{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if list.shown == nil {
		list.set, list.shown = set, []string{"*", l.tokens.name(list)}
	}
	return list.shown
}

// subscription returns the names, and their set, that names stands in for
// (see standIn); ok is false when names is not a stand-in. A stand-in
// whose list is gone (which a stream holding it cannot see happen)
// returns an error.
func (l *nameLists) subscription(names []string) (real []string, set map[string]struct{}, ok bool, err error) {
	if l == nil || len(names) != 2 || names[0] != "*" {
		return nil, nil, false, nil
	}
	return l.token(names[1])
}

// token returns the names, and their set, that a stand-in's token stands
// for; ok is false when t is not a token.
func (l *nameLists) token(t string) (real []string, set map[string]struct{}, ok bool, err error) {
	if l == nil || !l.tokens.isName(t) {
		return nil, nil, false, nil
	}
	list := l.tokens.lookup(t)
	if list == nil {
		return nil, nil, true, errors.New("minimesh does not know the endpoint names this request stands for; reconnect")
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return list.names, list.set, true, nil
}

// deltaNames returns names, a delta request's resource_names_subscribe,
// with a stand-in replaced by the names it stands for.
func (l *nameLists) deltaNames(names []string) ([]string, error) {
	if len(names) != 1 {
		return names, nil
	}
	real, _, ok, err := l.token(names[0])
	if !ok {
		return names, nil
	}
	return real, err
}

// list returns the names encoded in wire (resource_names fields, each
// well formed), from the remembered lists or remembering them.
func (l *nameLists) list(wire []byte) (*nameList, error) {
	sum := maphash.Bytes(listSeed, wire)
	l.mu.RLock()
	for _, known := range l.lists[sum] {
		if known.wire == string(wire) {
			l.mu.RUnlock()
			return known, nil
		}
	}
	l.mu.RUnlock()

	var names []string
	for b := wire; len(b) > 0; {
		_, _, n := protowire.ConsumeTag(b)
		r, m := protowire.ConsumeBytes(b[n:])
		b = b[n+m:]
		if s, ok := l.canonical(r); ok {
			names = append(names, s)
			continue
		}
		if !utf8.Valid(r) {
			return nil, fmt.Errorf("resource name %q is not valid UTF-8", r)
		}
		names = append(names, string(r))
	}
	names = names[:len(names):len(names)] // an append must copy

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, known := range l.lists[sum] { // another stream may have been quicker
		if known.wire == string(wire) {
			return known, nil
		}
	}
	if l.held+len(names) > maxListedNames || l.bytes+2*len(wire) > maxListedBytes {
		l.lists = map[uint64][]*nameList{}
		l.held, l.bytes = 0, 0
	}
	list := &nameList{wire: string(wire), names: names}
	l.lists[sum] = append(l.lists[sum], list)
	l.held += len(names)
	l.bytes += 2 * len(wire)
	return list, nil
}
