package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// podNet is a little pod network made for one test: a Linux bridge on the
// host holding the gateway address (.1 of a /24 no interface here uses),
// and one network namespace per pod, joined to the bridge by a veth pair.
// Pods reach each other across the bridge and meshd on the gateway
// address; nothing is routed anywhere else (no default route, no
// forwarding), so traffic can only go to addresses inside what the test
// created. Everything is removed in t.Cleanup.
type podNet struct {
	t      *testing.T
	id     string // short random tag in every interface and namespace name
	bridge string
	prefix string // "10.77.N."
}

// newPodNet creates the bridge, or skips the test when this machine cannot
// make network namespaces (not root, or no iproute2).
func newPodNet(t *testing.T) *podNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Kubernetes e2e runs workloads in network namespaces it creates, which needs root; run the tests as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the Kubernetes e2e needs iproute2's `ip` to create network namespaces (apt-get install iproute2)")
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	n := &podNet{t: t, id: hex.EncodeToString(tag)}
	n.bridge = "mmbr" + n.id
	prefix, err := freeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	n.prefix = prefix
	t.Cleanup(func() { _ = n.ip("link", "del", n.bridge) })
	if err := n.ip("link", "add", n.bridge, "type", "bridge"); err != nil {
		t.Skipf("cannot create a bridge for the pod network (%v); the Kubernetes e2e needs CAP_NET_ADMIN", err)
	}
	// A bridge without an address of its own takes the lowest of its
	// ports' and changes it when a pod with a lower one joins; pods that
	// still have the old one in their ARP cache then cannot reach the
	// gateway (meshd) until it expires, some 30 s. A fixed, locally
	// administered address keeps it stable.
	mac := fmt.Sprintf("02:6d:6d:%s:%s:%s", n.id[0:2], n.id[2:4], n.id[4:6])
	for _, args := range [][]string{
		{"link", "set", "dev", n.bridge, "address", mac},
		{"addr", "add", n.Gateway() + "/24", "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if err := n.ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// freeSubnet picks 10.77.N.0/24 with N such that no address on this
// machine is in it, so two test runs (or anything else) never overlap.
func freeSubnet() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("listing this machine's addresses: %w", err)
	}
	for range 50 {
		v, _ := rand.Int(rand.Reader, big.NewInt(250))
		prefix := fmt.Sprintf("10.77.%d.", v.Int64()+2)
		used := false
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), prefix) {
				used = true
			}
		}
		if !used {
			return prefix, nil
		}
	}
	return "", fmt.Errorf("no free 10.77.N.0/24 for the pod network after 50 tries")
}

// Gateway is the host's address on the pod network, where meshd listens.
func (n *podNet) Gateway() string { return n.prefix + "1" }

// IP is the address of host number i (2-254) on the pod network.
func (n *podNet) IP(i int) string { return fmt.Sprintf("%s%d", n.prefix, i) }

// AddPod creates a network namespace holding ip on a veth joined to the
// bridge, and returns the namespace's name (for `ip netns exec`).
// Failures are reported to t; the namespace lives as long as the network.
func (n *podNet) AddPod(t *testing.T, ip string) string {
	t.Helper()
	last := ip[strings.LastIndexByte(ip, '.')+1:]
	ns := "mm" + n.id + "-" + last
	host, peer := "mmh"+n.id+last, "mmp"+n.id+last
	must := func(args ...string) {
		t.Helper()
		if err := n.ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("netns", "add", ns)
	n.t.Cleanup(func() { _ = n.ip("netns", "del", ns) })
	must("link", "add", host, "type", "veth", "peer", "name", peer)
	n.t.Cleanup(func() { _ = n.ip("link", "del", host) })
	must("link", "set", peer, "netns", ns)
	must("link", "set", host, "master", n.bridge)
	must("link", "set", host, "up")
	must("-n", ns, "link", "set", "lo", "up")
	must("-n", ns, "addr", "add", ip+"/24", "dev", peer)
	must("-n", ns, "link", "set", peer, "up")
	return ns
}

func (n *podNet) ip(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
