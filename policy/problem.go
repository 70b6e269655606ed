package policy

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Severity separates problems that skip an object from those that only warn.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Problem is one thing wrong with one object, phrased so a user can act on
// it: where (file:line), what (kind namespace/name), which field, and what is
// allowed. It is used for every kind minimesh reads, not only policies.
type Problem struct {
	Severity  Severity `json:"severity"`
	Kind      string   `json:"kind,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name,omitempty"`
	Location  Location `json:"location,omitzero"`
	Field     string   `json:"field,omitempty"`
	Message   string   `json:"message"`
}

// Error renders "file:line: Kind ns/name: field: message".
func (p Problem) Error() string {
	var b strings.Builder
	if loc := p.Location.String(); loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if p.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if p.Kind != "" {
		b.WriteString(p.Kind)
		if p.Name != "" {
			b.WriteString(" ")
			if p.Namespace != "" {
				b.WriteString(p.Namespace + "/")
			}
			b.WriteString(p.Name)
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Line renders the problem the way `meshctl validate` prints it, with the
// severity spelled out: "file:line: error|warning: Kind ns/name: field:
// reason" (the location only when there is one). The admission webhook
// answers with the same lines, so a user sees one wording wherever a
// mistake is caught.
func (p Problem) Line() string {
	loc := p.Location.String()
	p.Location = Location{}
	sev := p.Severity
	p.Severity = SeverityError // Error() adds nothing for errors
	s := string(sev) + ": " + p.Error()
	if loc != "" {
		s = loc + ": " + s
	}
	return s
}

// Problems is a list of problems, errors and warnings mixed.
type Problems []Problem

// HasErrors reports whether any problem is an error.
func (ps Problems) HasErrors() bool {
	for _, p := range ps {
		if p.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Err returns every error (not warning) as one multierror, or nil.
func (ps Problems) Err() error {
	var result *multierror.Error
	for _, p := range ps {
		if p.Severity == SeverityError {
			result = multierror.Append(result, p)
		}
	}
	return result.ErrorOrNil()
}

// errorf and warnf build problems about one object.
func errorf(m *Meta, field, format string, args ...any) Problem {
	return Problem{Severity: SeverityError, Kind: m.Kind, Namespace: m.Namespace, Name: m.Name,
		Location: m.Origin, Field: field, Message: fmt.Sprintf(format, args...)}
}

func warnf(m *Meta, field, format string, args ...any) Problem {
	p := errorf(m, field, format, args...)
	p.Severity = SeverityWarning
	return p
}
