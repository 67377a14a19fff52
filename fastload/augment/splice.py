"""Source-level inlining: the body of a small Numba function, as statements of another.

The fused kernel (``fastload.augment.fused``) is written by pasting each stage's function
body (the warp, every op's ``pixel``, the store) into one loop. Numba's own
``inline="always"`` gives the same results but, measured here, a 2-4x slower kernel: every
inlined call that takes an array adds reference-count updates to the loop body, which
block LLVM's loop optimizations. Pasted source is exactly the hand-fused loop.

:func:`splice` accepts a plain function of the form::

    def piece(p1, p2, ...):
        "optional docstring"
        <statements>            # no nested functions, lambdas or comprehensions
        return o1, o2, ...      # optional; the only return, last, names only

and returns its statements with the parameters renamed to the caller's variables, its
local variables renamed ``<prefix>__<name>``, and its globals renamed ``<prefix>__<name>``
and imported from the function's module (modules are imported as themselves); builtins
keep their names. The returned names are assigned to the caller's output variables.
A parameter bound to a variable the caller does not list as per-pixel must not be
assigned: it would leak into the next pixel.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from typing import Dict, List, Sequence, Set, Tuple

_FORBIDDEN = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp,
              ast.DictComp, ast.GeneratorExp, ast.ClassDef, ast.Global, ast.Nonlocal,
              ast.Yield, ast.YieldFrom, ast.Await)


class SpliceError(ValueError):
    """A function that :func:`splice` cannot paste; the message names it and why."""


def _function_def(func) -> Tuple[ast.FunctionDef, str]:
    py = getattr(func, "py_func", func)
    where = f"{py.__module__}.{py.__qualname__}"
    tree = ast.parse(textwrap.dedent(inspect.getsource(py)))
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise SpliceError(f"{where}: not a plain function")
    a = fdef.args
    if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
        raise SpliceError(f"{where}: only plain positional parameters can be spliced")
    return fdef, where


def _stored_names(nodes) -> Set[str]:
    out = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                out.add(n.id)
    return out


def splice(func, args: Sequence[str], outputs: Sequence[str], prefix: str,
           per_pixel: Set[str], imports: Dict[str, str]) -> List[str]:
    """Statements (unindented source lines) of ``func``'s body with its parameters bound
    to the variable names ``args``, its return values assigned to ``outputs``; import
    lines it needs are added to ``imports`` (alias -> line). See the module docstring."""
    fdef, where = _function_def(func)
    py = getattr(func, "py_func", func)
    params = [a.arg for a in fdef.args.args]
    if len(params) != len(args):
        raise SpliceError(f"{where}: takes {len(params)} parameters, the kernel passes {len(args)}")
    body = list(fdef.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    returned: List[str] = []
    if body and isinstance(body[-1], ast.Return):
        value = body.pop().value
        elts = value.elts if isinstance(value, ast.Tuple) else [] if value is None else [value]
        if not all(isinstance(e, ast.Name) for e in elts):
            raise SpliceError(f"{where}: the return statement may only name variables")
        returned = [e.id for e in elts]
    if len(returned) != len(outputs):
        raise SpliceError(f"{where}: returns {len(returned)} values, the kernel expects "
                          f"{len(outputs)}")
    for node in body:
        for n in ast.walk(node):
            if isinstance(n, ast.Return):
                raise SpliceError(f"{where}: only one return, as the last statement")
            if isinstance(n, _FORBIDDEN):
                raise SpliceError(f"{where}: cannot splice a {type(n).__name__}")

    binding = dict(zip(params, args))
    stored = _stored_names(body)
    for p in params:
        if p in stored and binding[p] not in per_pixel:
            raise SpliceError(f"{where}: assigns to its parameter {p!r}, bound to the kernel's "
                              f"{binding[p]!r}, which must stay the same for every pixel")
    rename: Dict[str, str] = dict(binding)
    for name in stored - set(params):
        rename[name] = f"{prefix}__{name}"
    out_of = dict(zip(returned, outputs))
    for name, out in out_of.items():  # a local that is returned: write the output directly
        if name not in binding and out not in binding.values() \
                and list(out_of.values()).count(out) == 1:
            rename[name] = out

    class _Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            name = node.id
            if name not in rename:
                if name in py.__globals__:
                    value = py.__globals__[name]
                    alias = f"{prefix}__{name}"
                    if isinstance(value, types.ModuleType):
                        imports[alias] = f"import {value.__name__} as {alias}"
                    else:
                        imports[alias] = f"from {py.__module__} import {name} as {alias}"
                    rename[name] = alias
                elif hasattr(builtins, name):
                    return node
                else:
                    raise SpliceError(f"{where}: unknown name {name!r}")
            return ast.copy_location(ast.Name(id=rename[name], ctx=node.ctx), node)

    lines: List[str] = []
    for stmt in body:
        lines += ast.unparse(_Rename().visit(stmt)).splitlines()
    for name, out in zip(returned, outputs):
        if rename.get(name, name) != out:
            lines.append(f"{out} = {rename.get(name, name)}")
    return lines
