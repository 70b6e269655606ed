package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// pathList is a repeatable -f flag.
type pathList []string

func (p *pathList) String() string { return strings.Join(*p, ",") }

func (p *pathList) Set(v string) error {
	if v == "" {
		return errors.New("must name a file or directory")
	}
	*p = append(*p, v)
	return nil
}

// runValidate checks manifests with the same builder meshd uses, so what
// passes here loads in meshd. Exit 1 when any problem is an error.
func runValidate(args []string, stdout, stderr io.Writer) int {
	var paths pathList
	var namespace, rootNamespace string
	fs := flag.NewFlagSet(programName+" validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&paths, "f", "manifest file or directory (*.yaml, *.yml, recursively); repeatable")
	fs.StringVar(&namespace, "n", "default", "namespace of objects that do not name one")
	fs.StringVar(&rootNamespace, "root-namespace", policy.DefaultRootNamespace, "namespace whose policies apply mesh-wide (as meshd's flag)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s validate -f FILE|DIR [-f FILE|DIR ...] [-n NAMESPACE] [-root-namespace NAMESPACE]\n\n"+
			"Parses and validates Kubernetes and Istio manifests offline, exactly as meshd\n"+
			"would load them, and prints every problem as\n"+
			"  file:line: error|warning: Kind namespace/name: field: reason\n"+
			"An entry of a directory that cannot be read as a manifest (a named pipe, a\n"+
			"dangling link, an unreadable or oversized file, UTF-16 text) is an error too.\n"+
			"Exits 1 if any problem is an error, 0 if there are only warnings or none.\n\nFlags:\n", programName)
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
		fmt.Fprintf(stderr, "%s validate: unexpected argument %q; name inputs with -f\n", programName, fs.Arg(0))
		return exitUsage
	}
	if len(paths) == 0 {
		fmt.Fprintf(stderr, "%s validate: nothing to validate; pass -f FILE or -f DIR\n", programName)
		return exitUsage
	}

	files, err := file.ReadPaths(paths...)
	if err != nil {
		fmt.Fprintf(stderr, "%s validate: %v\n", programName, err)
		return exitFailed
	}
	snap := file.Build(files, file.Options{DefaultNamespace: namespace, RootNamespace: rootNamespace})
	errs, warns := 0, 0
	for _, p := range snap.Problems {
		fmt.Fprintln(stdout, p.Line())
		if p.Severity == policy.SeverityError {
			errs++
		} else {
			warns++
		}
	}
	fmt.Fprintln(stdout, summary(len(files), snap, errs, warns))
	if errs > 0 {
		return exitFailed
	}
	return exitOK
}

func summary(files int, s *model.Snapshot, errs, warns int) string {
	ps := s.Policies
	policies := len(ps.PeerAuthentications) + len(ps.DestinationRules) + len(ps.AuthorizationPolicies) + len(ps.RequestAuthentications)
	verdict := "valid"
	if errs > 0 {
		verdict = "INVALID"
	}
	return fmt.Sprintf("%s: %s in %s; loaded %s, %s, %s, %s",
		verdict, plural(errs, "error"), plural(files, "file"),
		plural(len(s.Namespaces), "namespace"), plural(len(s.Services), "service"),
		plural(len(s.Workloads), "pod"), plural(policies, "policy"),
	) + warningsSuffix(warns)
}

func warningsSuffix(n int) string {
	if n == 0 {
		return ""
	}
	return "; " + plural(n, "warning")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}
