package xds

import (
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
// and the lists held by go-control-plane's watches are shared.
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
	req, ok := v.(*discoveryv3.DiscoveryRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	sc.in = slices.Grow(sc.in[:0], data.Len())[:data.Len()]
	data.CopyTo(sc.in)
	return c.lists.decode(sc, req)
}

// The field number of DiscoveryRequest.resource_names.
const resourceNamesField = 3

// maxListedNames bounds the names nameLists keeps; past it, the lists are
// dropped and learnt anew. A few clients sending many different lists
// can therefore cost decoding time, not memory.
const maxListedNames = 1 << 20

// nameLists remembers decoded lists. A list is known by its encoding:
// the resource_names fields of a request, as they were on the wire.
type nameLists struct {
	// canonical returns the string the endpoint cache holds for a
	// name, if it holds one, so that a new list holds no copy of a
	// known name either. It must not allocate for unknown names.
	canonical func([]byte) (string, bool)

	mu    sync.RWMutex
	lists map[uint64][]nameList // by maphash of the encoding
	held  int                   // names in lists
}

type nameList struct {
	wire  string // the resource_names fields as encoded
	names []string
}

func newNameLists(canonical func([]byte) (string, bool)) *nameLists {
	return &nameLists{canonical: canonical, lists: map[uint64][]nameList{}}
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
	for b := sc.in; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decoding a DiscoveryRequest: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("decoding a DiscoveryRequest: %w", protowire.ParseError(m))
		}
		if num == resourceNamesField && typ == protowire.BytesType {
			sc.names = append(sc.names, b[:n+m]...)
		} else {
			sc.rest = append(sc.rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if err := proto.Unmarshal(sc.rest, req); err != nil {
		return err
	}
	if len(sc.names) == 0 {
		return nil
	}
	names, err := l.list(sc.names)
	if err != nil {
		return err
	}
	req.ResourceNames = names
	return nil
}

// list returns the names encoded in wire (resource_names fields, each
// well formed), from the remembered lists or remembering them.
func (l *nameLists) list(wire []byte) ([]string, error) {
	sum := maphash.Bytes(listSeed, wire)
	l.mu.RLock()
	for _, known := range l.lists[sum] {
		if known.wire == string(wire) {
			l.mu.RUnlock()
			return known.names, nil
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
			return nil, fmt.Errorf("decoding a DiscoveryRequest: resource name %q is not valid UTF-8", r)
		}
		names = append(names, string(r))
	}
	names = names[:len(names):len(names)] // an append must copy

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, known := range l.lists[sum] { // another stream may have been quicker
		if known.wire == string(wire) {
			return known.names, nil
		}
	}
	if l.held+len(names) > maxListedNames {
		clear(l.lists)
		l.held = 0
	}
	l.lists[sum] = append(l.lists[sum], nameList{wire: string(wire), names: names})
	l.held += len(names)
	return names, nil
}
