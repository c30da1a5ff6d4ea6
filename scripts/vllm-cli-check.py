#!/usr/bin/env python3
"""Checks vLLM command lines against vLLM's own CLI argument definitions, read from its wheel.

Usage: vllm-cli-check.py WHEEL < command-lines.json

stdin is a JSON list of {"name": ..., "args": [...]}: the arguments gpuplane passes to
`vllm serve` (the vllm/vllm-openai image's entrypoint). stdout is a JSON object
{"version": ..., "flags": N, "problems": [{"name": ..., "problem": ...}]}.

The wheel is read, never installed or imported (importing vLLM needs torch and a GPU stack):
its Python source is parsed with `ast`. The parser of `vllm serve` is `make_arg_parser` in
vllm/entrypoints/{common,openai}/cli_args.py: flags added there literally, plus those that
`X.add_cli_args(parser)` adds for each class X it calls (FrontendArgs, AsyncEngineArgs and,
through them, EngineArgs), where most flags come from config dataclass fields
(`group.add_argument("--max-model-len", **model_kwargs["max_model_len"])` with
`model_kwargs = get_kwargs(ModelConfig)`, or `f"--{key.replace('_', '-')}"` over every field).
A flag's value is checked against the field's annotation the way vLLM's `get_kwargs` turns it
into argparse keywords (bool: no value; list: one or more; Literal: the choices; int, float)
and the pydantic `Field(ge=, gt=, le=, lt=)` bounds.

Exit status 0 when it could read the definitions (whatever it found), 2 when it could not.
"""
import ast
import json
import sys
import zipfile

WHEEL = sys.argv[1]


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(2)


archive = zipfile.ZipFile(WHEEL)
names = archive.namelist()
version = next((n.split("/")[0][: -len(".dist-info")].split("-", 1)[1] for n in names if n.endswith(".dist-info/METADATA")), "?")
wanted = [
    n for n in names
    if n.endswith(".py") and (
        n.startswith("vllm/config/") or n == "vllm/engine/arg_utils.py"
        or n.startswith("vllm/entrypoints/") or n == "vllm/model_executor/layers/quantization/__init__.py")
]
trees = {}
for n in wanted:
    try:
        trees[n] = ast.parse(archive.read(n).decode("utf-8"), filename=n)
    except SyntaxError:
        continue

# Module-level aliases (RunnerOption = Literal[...]) and classes, by name, across the files read.
aliases = {}
classes = {}
for tree in trees.values():
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            aliases.setdefault(node.targets[0].id, node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if isinstance(node.annotation, ast.Name) and node.annotation.id == "TypeAlias":
                aliases.setdefault(node.target.id, node.value)
        elif isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, node)


def base_names(cls):
    return [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else None for b in cls.bases]


def fields(class_name, seen=None):
    """name -> (annotation, default) of a dataclass and its bases (own fields win)."""
    seen = seen or set()
    cls = classes.get(class_name)
    if cls is None or class_name in seen:
        return {}
    seen.add(class_name)
    out = {}
    for base in base_names(cls):
        if base:
            out.update(fields(base, seen))
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name) and annotation.value.id == "ClassVar":
                continue
            out[node.target.id] = (annotation, node.value)
    return out


def hints(annotation, depth=0):
    """The set of type hints of an annotation: 'bool', 'int', 'float', 'str', 'list', 'dict',
    'none', 'other', or ('literal', values)."""
    if depth > 20 or annotation is None:
        return {"other"}
    a = annotation
    if isinstance(a, ast.Constant):
        if a.value is None:
            return {"none"}
        if isinstance(a.value, str):  # a string annotation
            try:
                return hints(ast.parse(a.value, mode="eval").body, depth + 1)
            except SyntaxError:
                return {"other"}
        return {"other"}
    if isinstance(a, ast.BinOp) and isinstance(a.op, ast.BitOr):
        return hints(a.left, depth + 1) | hints(a.right, depth + 1)
    if isinstance(a, ast.Subscript):
        head = a.value.id if isinstance(a.value, ast.Name) else a.value.attr if isinstance(a.value, ast.Attribute) else ""
        items = a.slice.elts if isinstance(a.slice, ast.Tuple) else [a.slice]
        if head == "Literal":
            values = []
            for item in items:
                if isinstance(item, ast.Constant):
                    values.append(item.value)
                else:  # a nested alias: Literal["auto", RunnerType]
                    for h in hints(item, depth + 1):
                        if isinstance(h, tuple):
                            values.extend(h[1])
            return {("literal", tuple(values))}
        if head in ("Optional",):
            return hints(items[0], depth + 1) | {"none"}
        if head == "Union":
            out = set()
            for item in items:
                out |= hints(item, depth + 1)
            return out
        if head == "Annotated":
            return hints(items[0], depth + 1)
        if head in ("list", "List", "Sequence"):
            return {"list"}
        if head in ("tuple", "Tuple", "set", "Set"):
            return {"list"}
        if head in ("dict", "Dict", "Mapping"):
            return {"dict"}
        return {"other"}
    if isinstance(a, ast.Name):
        if a.id in ("bool", "int", "float", "str", "dict", "list"):
            return {a.id}
        if a.id in aliases:
            return hints(aliases[a.id], depth + 1)
        return {"other"}
    return {"other"}


def bounds(default):
    """The numeric bounds of a pydantic Field(...) default: {'ge': 1, ...}."""
    out = {}
    if isinstance(default, ast.Call) and getattr(default.func, "id", getattr(default.func, "attr", "")) == "Field":
        for kw in default.keywords:
            if kw.arg in ("ge", "gt", "le", "lt"):
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    pass
    return out


def spec_of_field(class_name, field_name, extra=None):
    f = fields(class_name).get(field_name)
    if f is None:
        return None
    annotation, default = f
    h = hints(annotation)
    literals = [v for x in h if isinstance(x, tuple) for v in x[1]]
    if "bool" in h and "str" in h:
        kind = "optional-value"
    elif "bool" in h:
        kind = "bool"
    elif literals:
        kind = "literal"
    elif "list" in h:
        kind = "list"
    elif "int" in h:
        kind = "int"
    elif "float" in h:
        kind = "float"
    else:
        kind = "str"
    spec = {"kind": kind, "choices": literals, "bounds": bounds(default), "field": f"{class_name}.{field_name}"}
    if extra:
        spec.update(extra)
    return spec


def literal_kwargs(call):
    """The kind of a flag added with literal keywords (action=, type=, nargs=)."""
    kind = "str"
    choices = []
    for kw in call.keywords:
        if kw.arg == "action" and isinstance(kw.value, ast.Constant) and kw.value.value in ("store_true", "store_false"):
            kind = "bool"
        elif kw.arg == "action" and isinstance(kw.value, ast.Attribute) and kw.value.attr == "BooleanOptionalAction":
            kind = "bool"
        elif kw.arg == "type" and isinstance(kw.value, ast.Name) and kw.value.id in ("int", "float") and kind == "str":
            kind = kw.value.id
        elif kw.arg == "nargs" and isinstance(kw.value, ast.Constant) and kw.value.value in ("+", "*"):
            kind = "list"
        elif kw.arg == "choices":
            try:
                choices = list(ast.literal_eval(kw.value))
                kind = "literal"
            except ValueError:
                pass
    return {"kind": kind, "choices": choices, "bounds": {}}


flags = {}


def find_method(class_name, method):
    cls = classes.get(class_name)
    while cls is not None:
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == method:
                return node
        bases = [b for b in base_names(cls) if b in classes]
        cls = classes[bases[0]] if bases else None
    return None


def kwargs_source(call, kwvars):
    """(class, field) when a call passes **var["field"] (or **{**var["field"], ...})."""
    for kw in call.keywords:
        if kw.arg is not None:
            continue
        candidates = [kw.value]
        if isinstance(kw.value, ast.Dict):
            candidates = [v for k, v in zip(kw.value.keys, kw.value.values) if k is None]
        for value in candidates:
            if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and value.value.id in kwvars:
                key = value.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    return kwvars[value.value.id], key.value
    return None


def walk_builder(function, concrete_class, visited):
    """Records the flags a parser-building function adds."""
    kwvars = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "get_kwargs" and value.args:
                arg = value.args[0]
                if isinstance(arg, ast.Name):
                    kwvars[node.targets[0].id] = concrete_class if arg.id == "cls" else arg.id
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and isinstance(value.func.value, ast.Name) \
                    and value.func.value.id == "cls" and value.args and isinstance(value.args[0], ast.Name) and value.args[0].id in kwvars:
                kwvars[node.targets[0].id] = kwvars[value.args[0].id]  # cls._customize_cli_kwargs(kwargs)
    loops = {}
    for node in ast.walk(function):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Attribute) \
                and node.iter.func.attr == "items" and isinstance(node.iter.func.value, ast.Name) and node.iter.func.value.id in kwvars \
                and isinstance(node.target, ast.Tuple) and isinstance(node.target.elts[0], ast.Name):
            loops[node.target.elts[0].id] = kwvars[node.iter.func.value.id]
    for node in ast.walk(function):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "add_argument":
            literal = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")]
            dynamic = [a for a in node.args if isinstance(a, ast.JoinedStr)]
            if dynamic and loops:
                for class_name in set(loops.values()):
                    for name in fields(class_name):
                        spec = spec_of_field(class_name, name)
                        flags.setdefault("--" + name.replace("_", "-"), spec)
                        if spec and spec["kind"] == "bool":
                            flags.setdefault("--no-" + name.replace("_", "-"), spec)
                continue
            source = kwargs_source(node, kwvars)
            spec = spec_of_field(*source) if source else literal_kwargs(node)
            if spec is None:
                spec = literal_kwargs(node)
            for flag in literal:
                flags.setdefault(flag, spec)
                if spec["kind"] == "bool" and flag.startswith("--") and source:
                    flags.setdefault("--no-" + flag[2:], spec)
        elif node.func.attr == "add_cli_args":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in classes:
                target = owner.id
            elif isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                bases = [b for b in base_names(classes[concrete_class]) if b in classes] if concrete_class in classes else []
                target = bases[0] if bases else None
            else:
                target = None
            if target and target not in visited:
                visited.add(target)
                method = find_method(target, "add_cli_args")
                if method is not None:
                    walk_builder(method, target, visited)


builders = [
    (n, node) for n, tree in trees.items()
    if n.endswith("entrypoints/common/cli_args.py") or n.endswith("entrypoints/openai/cli_args.py")
    for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "make_arg_parser"
]
if not builders:
    fail("no make_arg_parser in vllm/entrypoints/{common,openai}/cli_args.py: this vLLM lays out its CLI differently")
walk_builder(builders[0][1], None, set())
for required in ("--model", "--served-model-name", "--port"):
    if required not in flags:
        fail(f"the definitions read lack {required}: the checker no longer understands this vLLM's CLI")


def check(args):
    problems = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            problems.append(f"'{token}' is not a flag and follows no flag that takes it")
            i += 1
            continue
        flag, inline = (token.split("=", 1) + [None])[:2] if "=" in token else (token, None)
        spec = flags.get(flag)
        if spec is None:
            close = [f for f in flags if f.startswith(flag[:8])][:3]
            problems.append(f"{flag} is not a vLLM {version} flag" + (f" (similar: {', '.join(close)})" if close else ""))
            i += 1
            continue
        kind = spec["kind"]
        values = []
        if kind == "bool":
            if inline is not None:
                problems.append(f"{flag} takes no value")
            i += 1
            continue
        if inline is not None:
            values = [inline]
            i += 1
        elif kind == "list":
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                values.append(args[j])
                j += 1
            i = j
        elif kind == "optional-value":
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                values = [args[i + 1]]
                i += 2
            else:
                i += 1
            continue
        else:
            if i + 1 >= len(args):
                problems.append(f"{flag} needs a value")
                break
            values = [args[i + 1]]
            i += 2
        if not values:
            problems.append(f"{flag} needs at least one value")
        for value in values:
            if kind == "literal" and spec["choices"] and value not in [str(c) for c in spec["choices"]]:
                problems.append(f"{flag} {value}: not one of {', '.join(str(c) for c in spec['choices'] if c is not None)}")
            if kind in ("int", "float"):
                try:
                    number = int(value) if kind == "int" else float(value)
                except ValueError:
                    problems.append(f"{flag} {value}: not an {kind}")
                    continue
                b = spec["bounds"]
                if ("ge" in b and number < b["ge"]) or ("gt" in b and number <= b["gt"]) \
                        or ("le" in b and number > b["le"]) or ("lt" in b and number >= b["lt"]):
                    problems.append(f"{flag} {value}: outside {spec.get('field', flag)}'s bounds {b}")
    return problems


requests = json.load(sys.stdin)
out = []
for request in requests:
    for problem in check(request["args"]):
        out.append({"name": request["name"], "problem": problem})
print(json.dumps({"version": version, "flags": len(flags), "problems": out}))
