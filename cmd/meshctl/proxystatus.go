package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/minimesh/minimesh/xds"
)

const proxyStatusUsage = `Usage: meshctl proxy-status [--meshd URL] [--token-file FILE]

Lists every proxy connected to meshd, like 'istioctl proxy-status':

  NAME     pod.namespace
  FLAVOR   envoy (sidecar) or grpc (proxyless gRPC)
  CDS LDS EDS RDS SDS
           SYNCED    the proxy ACKed the version meshd wants it to have
           STALE     sent (or about to be), not ACKed yet
           NACKED    the proxy rejected it; the error is listed below
           NOT SENT  meshd has nothing of this type for it yet
           -         the proxy has not asked for this type
           WAITING   meshd does not know the proxy's pod yet; the stream
                     stays open and configuration follows when it does
                     (the reason is listed below)
  VERSION  a digest of the CDS, LDS, RDS and EDS versions meshd serves the
           proxy: proxies that show the same VERSION hold the same config

Why a proxy waits, refused streams, NACK errors and groups whose latest
configuration could not be published are listed below the table. Exits 0
whenever meshd answered.

When meshd checks who reads its debug API (--debug-auth), pass a bearer
token with --token-file or $MESHCTL_TOKEN.

Flags:
`

// statusTypes are the columns, in the order istioctl prints them.
var statusTypes = []string{"cds", "lds", "eds", "rds", "sds"}

func runProxyStatus(args []string, stdout, stderr io.Writer) int {
	var debug debugFlags
	fs := flag.NewFlagSet(programName+" proxy-status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	debug.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), proxyStatusUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s proxy-status: unexpected argument %q; it lists every proxy (use proxy-config for one)\n", programName, fs.Arg(0))
		return exitUsage
	}
	client, err := debug.client()
	if err != nil {
		fmt.Fprintf(stderr, "%s proxy-status: %v\n", programName, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), debugTimeout)
	defer cancel()
	st, err := client.syncz(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "%s proxy-status: %v\n", programName, err)
		return exitFailed
	}
	if err := writeProxyStatus(stdout, st); err != nil {
		fmt.Fprintf(stderr, "%s proxy-status: %v\n", programName, err)
		return exitFailed
	}
	return exitOK
}

// writeProxyStatus prints the table and, below it, everything that needs
// a sentence rather than a cell.
func writeProxyStatus(w io.Writer, st xds.SyncStatus) error {
	if !st.Ready {
		fmt.Fprintln(w, "meshd is not ready: it has not published its first configuration yet")
	}
	if len(st.Proxies) == 0 {
		_, err := fmt.Fprintln(w, "no proxies are connected to meshd")
		return err
	}
	t := &table{header: []string{"NAME", "FLAVOR", "CDS", "LDS", "EDS", "RDS", "SDS", "VERSION"}}
	var notes []string
	// By name, as a user scans for a pod; syncz sorts by node ID (IP first).
	proxies := slices.Clone(st.Proxies)
	slices.SortStableFunc(proxies, func(a, b xds.ProxyStatus) int { return strings.Compare(proxyName(a), proxyName(b)) })
	for _, p := range proxies {
		name := proxyName(p)
		row := []string{name, p.Flavor}
		for _, typ := range statusTypes {
			ts, asked := p.Types[typ]
			switch {
			case p.Refused != "":
				row = append(row, "REFUSED")
			case p.Waiting:
				row = append(row, "WAITING")
			case !asked:
				row = append(row, "-")
			default:
				row = append(row, ts.State)
			}
			if asked && ts.State == xds.StateNacked {
				notes = append(notes, fmt.Sprintf("%s %s NACKED version %s: %s", name, strings.ToUpper(typ), ts.Nacked, ts.NackError))
			}
		}
		row = append(row, configVersion(p))
		t.add(row...)
		if p.Refused != "" {
			notes = append(notes, fmt.Sprintf("%s REFUSED: %s", name, p.Refused))
		} else if p.Waiting {
			notes = append(notes, fmt.Sprintf("%s WAITING: %s", name, waitReason(p)))
		}
		if p.Certificate != nil && p.Certificate.Error != "" {
			notes = append(notes, fmt.Sprintf("%s has no workload certificate: %s", name, p.Certificate.Error))
		}
	}
	for _, g := range st.Groups {
		if g.Error != "" {
			notes = append(notes, fmt.Sprintf("group %s (%d proxies) keeps its last good configuration: %s: %s", g.Key, g.Proxies, g.ErrorKind, g.Error))
		}
	}
	if err := t.write(w); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

// configVersion digests the versions meshd wants the proxy to hold; "-"
// until it has any. The versions themselves are content hashes, so equal
// digests mean equal configuration.
func configVersion(p xds.ProxyStatus) string {
	h := sha256.New()
	seen := false
	for _, typ := range []string{"cds", "lds", "rds", "eds"} {
		v := p.Types[typ].Current
		seen = seen || v != ""
		fmt.Fprintf(h, "%s=%s;", typ, v)
	}
	if !seen {
		return "-"
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// waitReason is why meshd keeps a proxy waiting; a meshd older than the
// reason field says only that it waits for the pod.
func waitReason(p xds.ProxyStatus) string {
	if p.WaitReason != "" {
		return p.WaitReason
	}
	return "meshd does not know its pod yet"
}
