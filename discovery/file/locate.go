package file

import (
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// locate sets the file and line of problems found about whole objects
// after they were read (discovery/convert's Warnings name the object and
// field only). The object is looked up by kind, namespace and name among
// the documents, the first in path order winning as it does in claim; the
// line is that of the field.
func (b *builder) locate(problems []model.Problem) []model.Problem {
	if len(problems) == 0 {
		return problems
	}
	byObject := map[[3]string]*document{}
	for i := range b.docs {
		d := &b.docs[i]
		id := d.memo.hdr
		if id == nil {
			continue // not a mapping, so never an object
		}
		ns := id.namespace
		switch {
		case id.apiVersion == "v1" && id.kind == "Namespace":
			ns = ""
		case ns == "":
			ns = b.opts.defaultNamespace()
		}
		k := [3]string{id.kind, ns, id.name}
		if _, seen := byObject[k]; !seen {
			byObject[k] = d
		}
	}
	for i := range problems {
		p := &problems[i]
		if d := byObject[[3]string{p.Kind, p.Namespace, p.Name}]; d != nil {
			p.Location = policy.Location{File: d.file, Line: d.ix.line(p.Field)}
		}
	}
	return problems
}
