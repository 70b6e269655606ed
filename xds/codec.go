package xds

import (
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"slices"
	"sync"
	"unicode/utf8"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/minimesh/minimesh/xds/internal/clip"
)

// requestCodec is gRPC's protobuf codec, except that it decodes the
// resource names of a DiscoveryRequest or DeltaDiscoveryRequest itself.
//
// A sidecar that sees every service sends the name of every cluster in
// each state-of-the-world EDS request, and it sends one to ACK every
// response: at 1,000 services and 1,000 sidecars an endpoint change brings
// a million names in, which the generic decoder copies into a million new
// strings, checks for UTF-8 and leaves to the garbage collector. Most of
// those requests repeat a list a stream already holds (every replica of a
// deployment subscribes to the same clusters, and an ACK repeats its
// stream's last request), so the codec recognises an endpoint list that
// some stream holds and hands out the same stand-in for it (see endpointList):
// no string is allocated for a known list, and the lists held by
// go-control-plane's watches are shared. Names of other types are decoded
// afresh, without copying those the endpoint cache already holds.
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

// nameLists knows the endpoint name lists that streams hold stand-ins for
// (see endpointList). A list is known by its encoding: the resource_names
// fields of a request, as they were on the wire. The index keeps nothing
// alive: a list lives while some stream, or a request not yet handled,
// holds its stand-in, whose token is the list's anchor (see anchor), and
// the index finds it through a weak pointer until the collector has taken
// it. So what a client made meshd decode goes when the client does.
type nameLists struct {
	// canonical returns the string the endpoint cache holds for a
	// name, if it holds one, so that a new list holds no copy of a
	// known name either. It must not allocate for unknown names.
	canonical func([]byte) (string, bool)

	// tokens names the lists: a list lives while a stream holds its
	// token.
	tokens *anchors[nameList]

	mu     sync.RWMutex
	byWire map[uint64][]weak.Pointer[nameList] // by maphash of the encoding
}

// nameList is the names of an endpoint request, shared by every stream
// subscribing to them: as a list, as a set, and as what go-control-plane
// is shown instead of them (shown, an explicit wildcard and the token that
// is the list's anchor). Immutable once made.
type nameList struct {
	wire   string // the resource_names fields as encoded
	names  []string
	set    map[string]struct{}
	shown  []string
	anchor anchor
	// bytes is roughly what the list costs: its encoding, its names and
	// its set.
	bytes int
}

func newNameLists(canonical func([]byte) (string, bool)) *nameLists {
	return &nameLists{canonical: canonical, byWire: map[uint64][]weak.Pointer[nameList]{},
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

// decode unmarshals sc.in into req as proto.Unmarshal does, except that an
// endpoint request's names are shown as a stand-in (see endpointList).
func (l *nameLists) decode(sc *scratch, req *discoveryv3.DiscoveryRequest) error {
	wire, refused, err := decodeExceptNames(sc, req)
	if refused != nil {
		req.ResourceNames = refused
	}
	if err != nil || len(wire) == 0 {
		return err
	}
	if req.GetTypeUrl() == resourcev3.EndpointType {
		list, names, err := l.endpointList(wire)
		switch {
		case err != nil:
			return decodeError(req, err)
		case list != nil:
			req.ResourceNames = list.shown
		default:
			req.ResourceNames = names
		}
		return nil
	}
	req.ResourceNames, err = l.names(wire)
	return decodeError(req, err)
}

// decodeDelta unmarshals sc.in into req as proto.Unmarshal does, except
// that an endpoint request's resource_names_subscribe are shown as a
// stand-in, the token alone. A delta sidecar subscribes to every cluster's
// assignment in its first endpoint request; go-control-plane's server then
// keeps a one-entry set of subscribed names per stream instead of a
// thousand names. The endpoint cache reads the list from the token
// (deltaSubscribed) and gives a stream a set of its own only when it
// subscribes to more or unsubscribes.
func (l *nameLists) decodeDelta(sc *scratch, req *discoveryv3.DeltaDiscoveryRequest) error {
	wire, refused, err := decodeExceptNames(sc, req)
	if refused != nil {
		req.ResourceNamesSubscribe = refused
	}
	if err != nil || len(wire) == 0 {
		return err
	}
	if req.GetTypeUrl() == resourcev3.EndpointType {
		list, names, err := l.endpointList(wire)
		switch {
		case err != nil:
			return decodeError(req, err)
		case list != nil:
			req.ResourceNamesSubscribe = list.shown[1:]
		default:
			req.ResourceNamesSubscribe = names
		}
		return nil
	}
	req.ResourceNamesSubscribe, err = l.names(wire)
	return decodeError(req, err)
}

// decodeExceptNames unmarshals the fields of sc.in other than field 3
// into m and returns field 3's encoding, the names, or nil and
// tooManyNames when there are too many to decode (see split).
func decodeExceptNames(sc *scratch, m proto.Message) ([]byte, []string, error) {
	names, tooMany, err := sc.split()
	if err != nil {
		return nil, nil, decodeError(m, err)
	}
	if err := proto.Unmarshal(sc.rest, m); err != nil || !tooMany {
		return names, nil, err
	}
	return nil, []string{tooManyNames}, nil
}

func decodeError(m proto.Message, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("decoding a %s: %w", m.ProtoReflect().Descriptor().Name(), err)
}

// split separates sc.in into its resource-name fields (field 3), which it
// returns, and its other fields, which it appends to sc.rest. tooMany
// reports a request with more than maxStreamNames names, or as many
// occurrences of another field; past that many, the field's occurrences
// are left out of sc.rest.
func (sc *scratch) split() (names []byte, tooMany bool, err error) {
	// Encoders write the names one after the other, so they are usually
	// one run of fields in sc.in, used where it is; only names in
	// several runs are gathered into sc.names.
	runs, count := 0, 0
	var others [16]int // occurrences by field number; unusual numbers in 0
	for b := sc.in; len(b) > 0; {
		var n int
		if b[0] == resourceNamesTag {
			// A run of names, read without the general field
			// decoding: a request may hold thousands.
			for n < len(b) && b[n] == resourceNamesTag {
				_, m := protowire.ConsumeBytes(b[n+1:])
				if m < 0 {
					return nil, false, protowire.ParseError(m)
				}
				n += 1 + m
				count++
			}
		} else {
			num, typ, t := protowire.ConsumeTag(b)
			if t < 0 {
				return nil, false, protowire.ParseError(t)
			}
			m := protowire.ConsumeFieldValue(num, typ, b[t:])
			if m < 0 {
				return nil, false, protowire.ParseError(m)
			}
			n = t + m
			if num != resourceNamesField || typ != protowire.BytesType {
				i := int(num)
				if i >= len(others) {
					i = 0
				}
				if others[i]++; others[i] > maxStreamNames {
					tooMany = true
				} else {
					sc.rest = append(sc.rest, b[:n]...)
				}
				b = b[n:]
				continue
			}
			// The names field with a tag in an unusual (longer) form.
			count++
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
	return names, tooMany || count > maxStreamNames, nil
}

// endpointList returns the list of an endpoint request's names, encoded
// in wire (resource_names fields, each well formed): one a stream holds
// already, or a new one. A list naming "*" is not a list but a wildcard
// subscription: its names are returned instead, as they are.
//
// go-control-plane's SOTW server builds a new set of a request's names for
// every request (Subscription.SetResourceSubscription): a thousand names
// in every ACK of every sidecar that sees every service, so at 1,000
// services and 1,000 sidecars 54 MB of live sets, 44 MB of garbage and a
// sixth of meshd's CPU per endpoint change. Shown the list's stand-in, an
// explicit wildcard and a token naming the list, it keeps a one-entry set
// and still does everything else (nonces, ACKs and NACKs, watches,
// response order); the endpoint cache reads the real names and their set,
// one per distinct list, from the token (subscription). Only the endpoint
// cache is asked for endpoints, so nothing else sees the stand-in.
func (l *nameLists) endpointList(wire []byte) (*nameList, []string, error) {
	sum := maphash.Bytes(listSeed, wire)
	l.mu.RLock()
	known := l.findLocked(sum, wire)
	l.mu.RUnlock()
	if known != nil {
		return known, nil, nil
	}
	names, err := l.names(wire)
	if err != nil || slices.Contains(names, "*") {
		return nil, names, err
	}
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	list := &nameList{wire: string(wire), names: names, set: set, bytes: 2*len(wire) + 64*len(names)}

	l.mu.Lock()
	defer l.mu.Unlock()
	if known := l.findLocked(sum, wire); known != nil { // another stream was quicker
		return known, nil, nil
	}
	list.shown = []string{"*", l.tokens.name(list)}
	l.byWire[sum] = append(l.byWire[sum], weak.Make(list))
	runtime.AddCleanup(list, l.forget, sum)
	return list, nil, nil
}

// findLocked returns the live list encoded as wire, whose maphash is sum.
// Called with mu held.
func (l *nameLists) findLocked(sum uint64, wire []byte) *nameList {
	for _, p := range l.byWire[sum] {
		if list := p.Value(); list != nil && list.wire == string(wire) {
			return list
		}
	}
	return nil
}

// forget drops collected lists from the index.
func (l *nameLists) forget(sum uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	live := slices.DeleteFunc(l.byWire[sum], func(p weak.Pointer[nameList]) bool { return p.Value() == nil })
	if len(live) == 0 {
		delete(l.byWire, sum)
	} else {
		l.byWire[sum] = live
	}
}

// subscription returns the names, and their set, that names stands in for
// (see endpointList); ok is false when names is not a stand-in. A
// stand-in whose list is gone (which a stream holding it cannot see
// happen) returns an error.
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

// names decodes the names encoded in wire (resource_names fields, each
// well formed), taking the endpoint cache's string for a name it holds.
func (l *nameLists) names(wire []byte) ([]string, error) {
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
			return nil, fmt.Errorf("resource name %q is not valid UTF-8", clip.String(string(r)))
		}
		names = append(names, string(r))
	}
	return names[:len(names):len(names)], nil // an append must copy
}
