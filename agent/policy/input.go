package policy

import (
	"encoding/json"
	"math"
	"strconv"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Kata's agent gives its policy serde_json's rendering of the rust-protobuf
// request types, which protojson does not reproduce: 64-bit integers and
// enums are numbers, bytes are arrays of numbers, a field named after a Rust
// keyword carries a trailing "_" (genpolicy's rules read Mount.type_), an
// unset message is null and a oneof is {"<field>": value} under the oneof's
// name. The input is built in that shape straight from the message.

// rustKeywords are the names rust-protobuf suffixes with "_".
var rustKeywords = map[string]bool{
	"as": true, "async": true, "await": true, "break": true, "const": true, "continue": true, "crate": true,
	"dyn": true, "else": true, "enum": true, "extern": true, "false": true, "fn": true, "for": true, "if": true,
	"impl": true, "in": true, "let": true, "loop": true, "match": true, "mod": true, "move": true, "mut": true,
	"pub": true, "ref": true, "return": true, "self": true, "Self": true, "static": true, "struct": true,
	"super": true, "trait": true, "true": true, "type": true, "unsafe": true, "use": true, "where": true,
	"while": true, "abstract": true, "become": true, "box": true, "do": true, "final": true, "macro": true,
	"override": true, "priv": true, "typeof": true, "unsized": true, "virtual": true, "yield": true, "try": true,
}

// keyTerm is the input's key for a field or oneof name.
func keyTerm(name protoreflect.Name) *ast.Term {
	s := string(name)
	if rustKeywords[s] {
		s += "_"
	}
	return ast.StringTerm(s)
}

// layout is a message type's keys, computed once per type.
type layout struct {
	fields []*ast.Term // by field index
	oneofs []*ast.Term // by oneof index
}

var layouts sync.Map // protoreflect.FullName -> *layout

func layoutOf(md protoreflect.MessageDescriptor) *layout {
	if l, ok := layouts.Load(md.FullName()); ok {
		return l.(*layout)
	}
	fs, os := md.Fields(), md.Oneofs()
	l := &layout{fields: make([]*ast.Term, fs.Len()), oneofs: make([]*ast.Term, os.Len())}
	for i := range fs.Len() {
		l.fields[i] = keyTerm(fs.Get(i).Name())
	}
	for i := range os.Len() {
		l.oneofs[i] = keyTerm(os.Get(i).Name())
	}
	layouts.Store(md.FullName(), l)
	return l
}

// inputOf renders a message as Kata's agent serialises it.
func inputOf(m protoreflect.Message) ast.Value {
	md := m.Descriptor()
	l := layoutOf(md)
	fs := md.Fields()
	obj := ast.NewObjectWithCapacity(fs.Len())
	for i := range fs.Len() {
		fd := fs.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			continue
		}
		obj.Insert(l.fields[i], fieldTerm(m, fd))
	}
	os := md.Oneofs()
	for i := range os.Len() {
		od := os.Get(i)
		if od.IsSynthetic() {
			continue
		}
		v := ast.InternedNullTerm
		if fd := m.WhichOneof(od); fd != nil {
			v = ast.NewTerm(ast.NewObject([2]*ast.Term{l.fields[fd.Index()], singularTerm(fd, m.Get(fd))}))
		}
		obj.Insert(l.oneofs[i], v)
	}
	return obj
}

// fieldTerm renders one field: unset messages and proto3 optionals are null.
func fieldTerm(m protoreflect.Message, fd protoreflect.FieldDescriptor) *ast.Term {
	switch {
	case fd.IsMap():
		mp := m.Get(fd).Map()
		obj := ast.NewObjectWithCapacity(mp.Len())
		vd := fd.MapValue()
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			// serde_json writes integer keys as strings.
			obj.Insert(ast.StringTerm(k.String()), singularTerm(vd, v))
			return true
		})
		return ast.NewTerm(obj)
	case fd.IsList():
		list := m.Get(fd).List()
		arr := make([]*ast.Term, list.Len())
		for i := range arr {
			arr[i] = singularTerm(fd, list.Get(i))
		}
		return ast.ArrayTerm(arr...)
	case fd.HasPresence() && !m.Has(fd):
		return ast.InternedNullTerm
	}
	return singularTerm(fd, m.Get(fd))
}

func singularTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) *ast.Term {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.InternedTerm(v.Bool())
	case protoreflect.StringKind:
		return ast.StringTerm(v.String())
	case protoreflect.EnumKind:
		return ast.InternedTerm(int(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.InternedTerm(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if u := v.Uint(); u > math.MaxInt64 {
			return ast.UIntNumberTerm(u)
		}
		return ast.InternedTerm(int64(v.Uint()))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return ast.InternedNullTerm // serde_json's rendering
		}
		return ast.NumberTerm(json.Number(strconv.FormatFloat(f, 'g', -1, 64)))
	case protoreflect.BytesKind:
		b := v.Bytes()
		arr := make([]*ast.Term, len(b))
		for i, c := range b {
			arr[i] = ast.InternedTerm(int(c))
		}
		return ast.ArrayTerm(arr...)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return ast.NewTerm(inputOf(v.Message()))
	}
	return ast.InternedNullTerm
}
